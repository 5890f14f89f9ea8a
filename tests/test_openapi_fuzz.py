"""Schemathesis v4 against a live ``conversation-service serve``: the OpenAPI spec is the contract.

The server is a real process (uvicorn, migrations, middleware, error handlers) on a fresh
database and the session's Redis. Schemathesis runs every phase (examples, coverage, fuzzing,
stateful) with ``--checks all`` and a fixed seed, so a CI failure reproduces locally.

It runs on each database the suite has (a fresh SQLite file, and a fresh PostgreSQL database when
``TEST_POSTGRES_URL`` is set). Credentials come from a Web Fuzzing Commons document: two users in
two tenants (``alice``, ``bob``, JWTs), the orchestrator's service key and, where the
OpenAI-compatible API exists, an API key of alice's issued through the internal API.
Schemathesis tries them in order per operation and keeps the first one admitted, so ``/api/v1``
runs as alice, ``/internal/v1`` as the orchestrator and the OpenAI-compatible routes with alice's
key. alice and bob are ``peers``,
which turns on ``object_level_authorization``: what alice reads on ``/api/v1`` is replayed as
bob, who must not get it. The test also fails if no request to some authenticated operation got
past authentication, since such a run proves nothing about that operation.

Exceptions to ``--checks all`` (each one narrow, written into the run's config from the live
document, and listed in the README):

* ``negative_data_rejection`` also counts ``413`` as a rejection: a schema-violating array of
  many items can be refused for its size by the body guard before anything validates its items.
* ``positive_data_acceptance`` also accepts ``400`` on operations with a ``cursor`` query
  parameter: a cursor is an opaque token signed by the server, so a schema-valid string is almost
  never one it issued, and ``400 invalid-cursor`` is the documented answer. Every other operation
  keeps the default.
* ``positive_data_acceptance`` also accepts ``412`` on operations with an ``If-Match`` header:
  a random well-formed version is almost never the current one, and 412 is the documented answer.
* ``ensure_resource_availability`` is off for ``.../sessions/current`` and ``.../summary``:
  schemathesis infers that a conversation it just created is reachable there, but a new
  conversation has no session until there is activity and no summary until one is generated, so
  ``404 session-not-found`` / ``404 summary-not-found`` is the documented, correct answer.
* Server-Sent Events operations (``text/event-stream``) get a 1 s request timeout, 2 events and
  10 examples: the stream never ends, so every successful case would otherwise cost the full
  request timeout.
* ``positive_data_acceptance`` also accepts ``400``/``422`` on the operations whose bodies carry
  rules JSON Schema cannot state (NUL-free keys at every depth, the callback-host allowlist, the
  merge-patched tracked context validated as a whole): see ``BUSINESS_RULES``.
* User-data erasure (``DELETE .../users/.../data``) is not fuzzed: it revokes the run's own API
  key and deletes everything the run is working with. It needs tests with identities of its own.
* The import (``POST /api/v1/conversations/import``) is not fuzzed: its body is
  ``application/x-ndjson``, which schemathesis cannot serialize.

Tune with ``FUZZ_MAX_EXAMPLES`` (per operation and phase, default 30), ``FUZZ_WORKERS`` (default 2)
and ``FUZZ_SEED``. Schemathesis spends its time generating cases, not waiting for the server: the
run grows with the number of operations (about a minute for 60 on the CI machine).
"""

import asyncio
import json
import os
import re
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import httpx
import pytest
import redis

from conversation_service.services.auth import issue_token
from tests.conftest import INTERNAL_KEY, JWT_SECRET, POSTGRES_URL
from tests.live_server import live_server, run_cli, service_env, tail

MAX_EXAMPLES = int(os.environ.get("FUZZ_MAX_EXAMPLES", "30"))
# One worker: with two, schemathesis's threads call hypothesis's lambda descriptions (ast.parse)
# at once, and CPython 3.11.7's AST converter keeps its recursion depth per interpreter, not per
# thread: "SystemError: AST constructor recursion depth mismatch" failed a run.
WORKERS = int(os.environ.get("FUZZ_WORKERS", "1"))
SEED = int(os.environ.get("FUZZ_SEED", "20240611"))
RUN_TIMEOUT = 540.0
# Server-Sent Events never end: each successful request is cut after this or after N events.
STREAM_TIMEOUT = 1.0
STREAM_EVENTS = 2
STREAM_MAX_EXAMPLES = 10

# Answers that do not show an identity was admitted: refusals, and what the body guard answers
# before credentials are looked at. (400 counts as admitted: the OpenAI-compatible API answers
# validation errors with it, and a malformed body alone never fills a whole run.)
PRE_AUTH_STATUSES = {401, 403, 413, 415}
# `negative_data_rejection` also counts 413 as a rejection: a schema-violating array of many
# items can be refused for its size (by the body guard) before anything validates its items.
NEGATIVE_STATUSES = [
    *("400", "401", "403", "404", "405", "406", "409", "413"),
    *("415", "422", "428", "429", "5xx"),
]
# `positive_data_acceptance` accepts these on operations that take a `cursor` query parameter.
CURSOR_STATUSES = ["2xx", "3xx", "400", "401", "403", "404", "409", "429", "5xx"]
# Sub-resources that a new conversation does not have yet, so 404 is the right answer right after
# it was created: the current session (none until there is activity) and the summary (none until
# one was generated). Schemathesis infers they are created with the conversation.
NO_RESOURCE_AVAILABILITY = re.compile(r"/(sessions/current|summary)(/|$)")
# Erasing a user's data also revokes the fuzzing identities' own API keys and deletes every
# object the run is working with, which turns the rest of the run into 401s and 404s. Erasure
# needs tests with identities of their own; schemathesis leaves it alone.
# The import takes application/x-ndjson, which schemathesis cannot serialize ("Serialization not
# possible"); tests/routes/test_export.py covers it, including refused bodies.
NOT_FUZZED = re.compile(r"^(DELETE /.*users/.*/data|POST /api/v1/conversations/import)$")
# Operations whose bodies carry rules JSON Schema cannot state, so a schema-valid body can still
# be refused with 400/422: NUL-free keys at every depth of free-form JSON (PostgreSQL JSONB
# cannot store NUL), the callback-host allowlist (configuration, not schema), and a tracked
# context whose merge-patched result is validated as a whole. `positive_data_acceptance` accepts
# those answers there; every other operation keeps the default.
BUSINESS_RULES = re.compile(
    r"^(PATCH /internal/v1/conversations/\{conversation_id\}/tracked-context"
    r"|POST /api/v1/conversations/\{conversation_id\}/messages"
    # ?leaf= names a message: a schema-valid id of none of the conversation's messages is a 422.
    r"|GET /api/v1/conversations/\{conversation_id\}/messages"
    r"|POST /internal/v1/conversations/\{conversation_id\}/messages"
    r"|POST /internal/v1/conversations/\{conversation_id\}/tasks"
    r"|PATCH /internal/v1/sessions/\{session_id\}/context"
    r"|POST /v1/conversations"
    r"|POST /v1/conversations/\{conversation_id\}"
    r"|POST /v1/conversations/\{conversation_id\}/items)$"
)
BUSINESS_STATUSES = ["2xx", "3xx", "400", "401", "403", "404", "409", "422", "429", "5xx"]


def operations(spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every operation of the document by schemathesis's name for it, ``METHOD /path``."""
    return {
        f"{method.upper()} {path}": operation
        for path, path_item in spec["paths"].items()
        for method, operation in path_item.items()
    }


def is_event_stream(operation: dict[str, Any]) -> bool:
    """Whether the operation answers with Server-Sent Events (an endless response)."""
    return any(
        "text/event-stream" in response.get("content", {})
        for response in operation.get("responses", {}).values()
    )


def schemathesis_config(spec: dict[str, Any], wfc_path: Path) -> str:
    """The run's config: WFC identities, then the per-operation exceptions to `--checks all`."""
    lines = [
        "[auth.wfc]",
        f"path = {json.dumps(str(wfc_path))}",
        'peers = ["alice", "bob"]',
        "",
        "[checks.negative_data_rejection]",
        f"expected-statuses = {json.dumps(NEGATIVE_STATUSES)}",
        "",
        # Free-form JSON objects (metadata, variables, content parts) accept any key in the
        # schema, but no key at any depth may hold NUL (PostgreSQL JSONB cannot store it): a
        # schema-valid body can get 400/422 on every operation that carries one.
        "[checks.positive_data_acceptance]",
        f"expected-statuses = {json.dumps(BUSINESS_STATUSES)}",
        "",
        # Off for the whole run: the per-operation switch below (NO_RESOURCE_AVAILABILITY) is
        # not honoured by the stateful phase, which builds its checks from the run's config, and
        # a new conversation's summary and current session are documented 404s (seen: created
        # with POST /api/v1/conversations, "not available" with GET …/summary).
        "[checks.ensure_resource_availability]",
        "enabled = false",
    ]
    for name, operation in operations(spec).items():
        # One block per operation: schemathesis applies the first block that matches.
        settings: list[str] = []
        query = {p["name"] for p in operation.get("parameters", []) if p["in"] == "query"}
        headers = {
            p["name"].lower() for p in operation.get("parameters", []) if p["in"] == "header"
        }
        accepted: list[str] | None = None
        if NOT_FUZZED.search(name):
            settings.append("enabled = false")
        if is_event_stream(operation):
            # Schemathesis reads a stream until it has N events or the request timeout passes;
            # an idle conversation sends none, so keep each successful case to a second.
            settings += [
                f"request-timeout = {STREAM_TIMEOUT}",
                f"max-stream-events = {STREAM_EVENTS}",
                f"generation.max-examples = {min(MAX_EXAMPLES, STREAM_MAX_EXAMPLES)}",
            ]
        if "cursor" in query:
            # An opaque, server-signed token: a schema-valid string is almost never one the
            # server issued, and 400 invalid-cursor is the documented answer.
            accepted = CURSOR_STATUSES
        if BUSINESS_RULES.search(name):
            accepted = BUSINESS_STATUSES
        if "if-match" in headers:
            # A schema-valid version is almost never the current one: 412 is the documented
            # answer of a conditional request whose condition does not hold.
            accepted = [*(accepted or BUSINESS_STATUSES), "412"]
        if accepted is not None:
            settings.append(
                f"checks.positive_data_acceptance.expected-statuses = {json.dumps(accepted)}"
            )
        if NO_RESOURCE_AVAILABILITY.search(name):
            settings.append("checks.ensure_resource_availability.enabled = false")
        if settings:
            lines += ["", "[[operations]]", f"include-name = {json.dumps(name)}", *settings]
    return "\n".join(lines) + "\n"


def schemathesis_command() -> list[str]:
    """The schemathesis CLI of the running interpreter's environment."""
    script = Path(sys.executable).parent / "schemathesis"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "schemathesis.cli"]


@dataclass(frozen=True)
class Identity:
    """One entry of the WFC auth document: a name and the bearer credential it sends."""

    name: str
    credential: str


def own_redis_db(redis_url: str) -> str:
    """The session's Redis server, but a database of this test's own, emptied.

    The server queues jobs and publishes events there; in a database of its own they can never
    reach a worker or a subscriber that another test starts on the session's database. (15 and 14
    belong to the suite and the queue tests on CI's Redis; 0 and 1 on the embedded one.)
    """
    base, _, _db = redis_url.rpartition("/")
    url = f"{base}/{13 if redis_url.endswith('/15') else 2}"
    with redis.Redis.from_url(url) as client:
        client.flushdb()
    return url


def tenant_user(name: str, run: str) -> tuple[str, str]:
    """A (tenant, user) pair of its own for ``name`` in this run."""
    return f"t-{name}-{run}", f"u-{name}-{run}"


def issue_api_key(base_url: str, tenant: str, user_id: str) -> str:
    """An OpenAI-compatible API key for the user, issued through the internal API."""
    response = httpx.post(
        f"{base_url}/internal/v1/api-keys",
        json={"tenant": tenant, "user": user_id, "name": "schemathesis"},
        headers={"Authorization": f"Bearer {INTERNAL_KEY}"},
        timeout=10,
    )
    assert response.status_code == 201, response.text
    key: str = response.json()["key"]
    return key


def write_auth(path: Path, identities: list[Identity]) -> Path:
    """Write the WFC auth document; schemathesis tries its entries in this order."""
    entries = [
        {
            "name": identity.name,
            "fixedHeaders": [{"name": "Authorization", "value": f"Bearer {identity.credential}"}],
        }
        for identity in identities
    ]
    path.write_text(json.dumps({"auth": entries}))
    return path


def responses_by_operation(har_path: Path, spec: dict[str, Any]) -> dict[str, set[int]]:
    """Status codes schemathesis received, keyed by ``METHOD /path/template``."""
    patterns = {
        name: re.compile("^" + re.sub(r"\{[^}]+\}", "[^/]+", name.split(" ", 1)[1]) + "$")
        for name in operations(spec)
    }
    seen: dict[str, set[int]] = defaultdict(set)
    for entry in json.loads(har_path.read_text())["log"]["entries"]:
        request = entry["request"]
        path = httpx.URL(request["url"]).path
        for name, pattern in patterns.items():
            if name.startswith(request["method"] + " ") and pattern.match(path):
                seen[name].add(entry["response"]["status"])
    return seen


def clip(text: str, limit: int = 40_000) -> str:
    """``text`` cut in the middle to at most about ``limit`` characters (head and summary kept)."""
    if len(text) <= limit:
        return text
    cut = len(text) - limit
    return f"{text[: limit * 3 // 4]}\n[... {cut} characters cut ...]\n{text[-limit // 4 :]}"


def server_errors(log_path: Path, limit: int = 20) -> str:
    """One line per distinct unhandled exception in the server's JSON log: path and cause."""
    causes: dict[str, str] = {}
    for line in log_path.read_text(errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and entry.get("exc") and entry.get("path"):
            cause = str(entry["exc"]).strip().splitlines()[-1]
            causes.setdefault(cause, str(entry["path"]))
    return "\n".join(f"{path}: {cause}" for cause, path in list(causes.items())[:limit])


@contextmanager
def fresh_database(backend: str, tmp_path: Path) -> Iterator[str]:
    """A database nobody else uses: a new SQLite file, or a new PostgreSQL database."""
    if backend == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'fuzz.db'}"
        return
    assert POSTGRES_URL is not None
    name = f"fuzz_{uuid.uuid4().hex[:12]}"
    admin = POSTGRES_URL.replace("postgresql+asyncpg://", "postgresql://")

    async def execute(statement: str) -> None:
        conn = await asyncpg.connect(admin)
        try:
            await conn.execute(statement)
        finally:
            await conn.close()

    asyncio.run(execute(f'CREATE DATABASE "{name}"'))
    try:
        yield POSTGRES_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        asyncio.run(execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.mark.slow
@pytest.mark.timeout(RUN_TIMEOUT + 60)
@pytest.mark.parametrize(
    "backend",
    [
        "sqlite",
        pytest.param(
            "postgres",
            marks=pytest.mark.skipif(POSTGRES_URL is None, reason="needs TEST_POSTGRES_URL"),
        ),
    ],
)
def test_live_server_honours_its_openapi_contract(
    backend: str, tmp_path: Path, redis_url: str
) -> None:
    with fresh_database(backend, tmp_path) as database_url:
        fuzz(database_url, tmp_path, redis_url)


def fuzz(database_url: str, tmp_path: Path, redis_url: str) -> None:
    """Run schemathesis against a live server on ``database_url``; fail on any finding."""
    env = {
        "CONVERSATION_ENVIRONMENT": "test",
        "CONVERSATION_DATABASE_URL": database_url,
        "CONVERSATION_REDIS_URL": own_redis_db(redis_url),
        "CONVERSATION_JWT_SECRET": JWT_SECRET,
        "CONVERSATION_INTERNAL_API_KEYS": INTERNAL_KEY,
        # Thousands of requests as one user: production quotas would leave most untested (429s
        # are covered by tests/services/test_rate_limits.py).
        "CONVERSATION_RATE_LIMIT_MESSAGES": "1000000/minute",
        "CONVERSATION_RATE_LIMIT_REQUESTS": "1000000/minute",
        "CONVERSATION_RATE_LIMIT_TENANT": "1000000/minute",
    }
    run_cli(["migrate"], env, cwd=tmp_path)
    config_path = tmp_path / "schemathesis.toml"
    har_path = tmp_path / "schemathesis.har"
    log_path = tmp_path / "server.log"

    run = uuid.uuid4().hex[:8]
    (alice_tenant, alice), (bob_tenant, bob) = tenant_user("alice", run), tenant_user("bob", run)
    identities = [
        Identity("alice", issue_token(JWT_SECRET, tenant=alice_tenant, user=alice)),
        Identity("bob", issue_token(JWT_SECRET, tenant=bob_tenant, user=bob)),
        Identity("orchestrator", INTERNAL_KEY),
    ]

    with live_server(env, cwd=tmp_path, log_path=log_path) as base_url:
        spec = httpx.get(f"{base_url}/openapi.json", timeout=10).json()
        if "POST /internal/v1/api-keys" in operations(spec):
            # The OpenAI-compatible API takes API keys, not JWTs: alice gets one too. Peers stay
            # the two JWT users, so object-level authorization is checked on /api/v1 only.
            api_key = issue_api_key(base_url, alice_tenant, alice)
            identities.append(Identity("alice-api-key", api_key))
        wfc_path = write_auth(tmp_path / "wfc-auth.json", identities)
        config_path.write_text(schemathesis_config(spec, wfc_path))
        command = [
            *schemathesis_command(),
            "--config-file",
            str(config_path),
            "run",
            f"{base_url}/openapi.json",
            "--checks",
            "all",
            "--max-examples",
            str(MAX_EXAMPLES),
            "--seed",
            str(SEED),
            "--workers",
            str(WORKERS),
            "--generation-database",
            "none",
            "--request-timeout",
            "10",
            "--no-color",
            "--report",
            "har",
            "--report-har-path",
            str(har_path),
        ]
        started = time.monotonic()
        try:
            result = subprocess.run(
                command,
                env=service_env({}),
                cwd=tmp_path,
                capture_output=True,
                text=True,
                timeout=RUN_TIMEOUT,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            partial = (exc.stdout or b"").decode(errors="replace")
            pytest.fail(
                f"schemathesis did not finish in {RUN_TIMEOUT:.0f}s; lower FUZZ_MAX_EXAMPLES or "
                f"find the slow operation in {har_path}\ncommand: {' '.join(command)}\n"
                f"--- server log tail ---\n{tail(log_path)}\n"
                f"--- schemathesis so far ---\n{clip(partial)}",
                pytrace=False,
            )
        elapsed = time.monotonic() - started

    # A run whose credentials never worked passes most checks on 401s alone: prove they did,
    # by an answer that an admitted request gets (2xx, or a 400/404/409/422 from behind it).
    secured = [
        name
        for name, operation in operations(spec).items()
        if operation.get("security") and not NOT_FUZZED.search(name)
    ]
    refused: list[str] = []
    if har_path.exists():  # absent only if schemathesis itself failed; its exit code says why
        statuses = responses_by_operation(har_path, spec)
        refused = [name for name in secured if not statuses.get(name, set()) - PRE_AUTH_STATUSES]
    refused_note = (
        f"no request to these operations got past authentication: {refused}\n" if refused else ""
    )

    output = result.stdout + result.stderr
    failures = output[output.find("=== FAILURES ===") :] if "=== FAILURES ===" in output else output
    # pytrace=False: the message is the report; the test's own source would only bury it.
    if result.returncode != 0:
        pytest.fail(
            f"schemathesis exited {result.returncode} after {elapsed:.0f}s "
            f"(seed {SEED}, {MAX_EXAMPLES} examples; request log {har_path})\n"
            f"command: {' '.join(command)}\n{refused_note}"
            f"--- unhandled exceptions in the server log ({log_path}) ---\n"
            f"{server_errors(log_path) or '(none)'}\n"
            f"--- schemathesis ---\n{clip(failures)}",
            pytrace=False,
        )
    if refused:
        pytest.fail(
            f"{refused_note}the fuzzing credentials do not work for them: schemathesis tested "
            f"nothing behind authentication there\n--- server log tail ---\n{tail(log_path)}",
            pytrace=False,
        )
