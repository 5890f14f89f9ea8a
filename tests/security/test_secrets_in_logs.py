"""Secrets never appear in logs: not the JWT secret, the service key, the webhook secret, the LLM
key or the database password from the configuration, and not the user tokens or API keys that
requests carry, whatever fails and at whatever log level.

The live test runs real processes (``migrate``, ``serve`` with the access log on, a worker) at
DEBUG, sends good and bad credentials everywhere they are accepted (headers, the SSE and
WebSocket ``token`` query parameter), makes callbacks fail, and then searches every line they
wrote. The in-process test does the same for everything the app logs through ``logging``.
"""

import asyncio
import base64
import logging
import secrets
import uuid
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from redis import Redis as SyncRedis
from websockets.asyncio.client import connect

from conversation_service.config.settings import ConversationSettings
from conversation_service.main import create_app
from conversation_service.observability import JSONFormatter
from conversation_service.services.auth import issue_token
from tests.conftest import make_settings, new_caller
from tests.live_server import cli_command, live_server, run_cli, service_env
from tests.receiver import run_receiver
from tests.routes.test_lifecycle import lifecycle_redis_url

pytestmark = pytest.mark.slow


class Secrets:
    """A deployment's secrets, each unique to this test run."""

    def __init__(self) -> None:
        self.jwt = "jwt-" + secrets.token_urlsafe(32)
        self.internal = "svc-" + secrets.token_urlsafe(24)
        raw = base64.b64encode(secrets.token_bytes(32)).decode()
        self.webhook = "whsec_" + raw
        self.webhook_raw = raw
        self.llm = "sk-" + secrets.token_urlsafe(24)
        self.db_password = "pw-" + secrets.token_hex(12)

    def all(self, *carried: str) -> dict[str, str]:
        found = {
            "jwt secret": self.jwt,
            "service key": self.internal,
            "webhook secret": self.webhook,
            "webhook secret bytes": self.webhook_raw,
            "llm key": self.llm,
            "database password": self.db_password,
        }
        for index, value in enumerate(carried):
            found[f"credential {index}"] = value
            # A JWT's signature alone is enough to replay it.
            if value.count(".") == 2:
                found[f"credential {index} signature"] = value.rsplit(".", 1)[1]
        return found


def with_password(database_url: str, password: str) -> str:
    """The URL with a password (PostgreSQL here trusts local connections and ignores it)."""
    if not database_url.startswith("postgresql"):
        return database_url
    scheme, _, rest = database_url.partition("://")
    userinfo, _, host = rest.partition("@")
    return f"{scheme}://{userinfo.split(':')[0]}:{password}@{host}"


def deployment_env(
    settings: ConversationSettings, keys: Secrets, redis_url: str, callback_url: str
) -> dict[str, str]:
    return {
        "CONVERSATION_ENVIRONMENT": "test",
        "CONVERSATION_DATABASE_URL": with_password(settings.database_url, keys.db_password),
        "CONVERSATION_REDIS_URL": redis_url,
        "CONVERSATION_JWT_SECRET": keys.jwt,
        "CONVERSATION_INTERNAL_API_KEYS": keys.internal,
        "CONVERSATION_WEBHOOK_SECRET": keys.webhook,
        "CONVERSATION_SUMMARY_LLM_API_KEY": keys.llm,
        "CONVERSATION_SUMMARY_LLM_URL": "http://127.0.0.1:9/v1",
        "CONVERSATION_ORCHESTRATOR_CALLBACK_URL": callback_url,
        "CONVERSATION_CALLBACK_ALLOWED_HOSTS": "127.0.0.1",
        "CONVERSATION_CALLBACK_MAX_ATTEMPTS": "2",
        "CONVERSATION_CALLBACK_RETRY_INTERVALS": "0",
        "CONVERSATION_JOB_RETRY_INTERVALS": "0",
        "CONVERSATION_LOG_LEVEL": "DEBUG",
        "CONVERSATION_ACCESS_LOG": "true",
    }


async def exercise(base_url: str, keys: Secrets, token: str, caller: Any) -> list[str]:
    """Good and bad credentials everywhere; returns the credentials the requests carried."""
    user = {"Authorization": f"Bearer {token}"}
    service = {"Authorization": f"Bearer {keys.internal}"}
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as http:
        cid = (
            await http.post("/api/v1/conversations", json={"agent_id": "a"}, headers=user)
        ).json()["id"]
        for i in range(2):
            posted = await http.post(
                f"/api/v1/conversations/{cid}/messages", json={"content": f"m{i}"}, headers=user
            )
            assert posted.status_code == 201
        issued = await http.post(
            "/internal/v1/api-keys",
            json={"tenant": caller.tenant, "user": caller.user},
            headers=service,
        )
        api_key = issued.json()["key"]
        assert (
            await http.post(
                "/v1/conversations", json={}, headers={"Authorization": f"Bearer {api_key}"}
            )
        ).is_success
        refused = [
            ("GET", "/api/v1/conversations", {"Authorization": f"Bearer {token}x"}),
            ("GET", "/api/v1/conversations", {"Authorization": f"Bearer {keys.jwt}"}),
            ("GET", "/api/v1/conversations", {"Authorization": f"Bearer {keys.internal}"}),
            (
                "GET",
                f"/internal/v1/conversations/{cid}",
                {"Authorization": f"Bearer {keys.internal}x"},
            ),
            ("GET", f"/internal/v1/conversations/{cid}", user),
            ("POST", "/v1/conversations", {"Authorization": f"Bearer {api_key}x"}),
            ("GET", f"/api/v1/conversations/{cid}/events?token={token}x", {}),
            ("GET", f"/api/v1/conversations/{uuid.uuid4()}", user),
        ]
        for method, url, headers in refused:
            response = await http.request(
                method, url, headers=headers, json={} if method == "POST" else None
            )
            assert response.status_code in (401, 404), (url, response.status_code)
        async with http.stream(
            "GET", f"/api/v1/conversations/{cid}/events", params={"token": token}
        ) as stream:
            assert stream.status_code == 200
            async for _ in stream.aiter_bytes():
                break
    ws = base_url.replace("http://", "ws://")
    async with connect(f"{ws}/api/v1/ws?token={token}") as socket:
        await socket.send(orjson.dumps({"type": "subscribe", "conversation_id": cid}).decode())
        await socket.recv()
    async with connect(f"{ws}/api/v1/ws?token={token}x") as socket:
        with pytest.raises(Exception):  # noqa: B017, PT011 - closed with 4401
            await socket.recv()
    return [token, token + "x", api_key]


async def test_no_secret_reaches_the_logs_of_the_server_the_cli_or_the_worker(
    settings: ConversationSettings, tmp_path: Path
) -> None:
    keys = Secrets()
    caller = new_caller()
    token = issue_token(keys.jwt, tenant=caller.tenant, user=caller.user)
    redis_url = lifecycle_redis_url(settings.effective_redis_url())
    SyncRedis.from_url(redis_url).flushdb()
    with run_receiver(keys.webhook) as receiver:
        receiver.statuses = [500] * 100  # every callback fails: the worker logs failures
        env = deployment_env(settings, keys, redis_url, receiver.url)
        migrated = run_cli(["migrate"], env, cwd=tmp_path)
        server_log = tmp_path / "server.log"
        with live_server(env, cwd=tmp_path, log_path=server_log) as base_url:
            carried = await exercise(base_url, keys, token, caller)
        worker = await asyncio.create_subprocess_exec(
            *cli_command(),
            "worker",
            "--burst",
            env=service_env(env),
            cwd=tmp_path,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        output, _ = await asyncio.wait_for(worker.communicate(), 120)
        worker_log = output.decode(errors="replace")
        assert worker.returncode == 0, worker_log[-3000:]
    assert receiver.received, "callbacks were attempted"
    logs = {
        "migrate": migrated.stdout + migrated.stderr,
        "server": server_log.read_text(),
        "worker": worker_log,
    }
    # The logs are not empty: requests, refusals and failed callbacks were all logged.
    assert '"msg":"request"' in logs["server"]
    assert '"status":401' in logs["server"]
    assert "job failed" in logs["worker"] or "callback" in logs["worker"]
    for source, text in logs.items():
        for name, value in keys.all(*carried).items():
            assert value not in text, f"{name} appears in the {source} log"


async def test_no_secret_reaches_the_app_loggers(
    settings: ConversationSettings, caplog: pytest.LogCaptureFixture
) -> None:
    keys = Secrets()
    configured = make_settings(
        settings.database_url,
        settings.effective_redis_url(),
        jwt_secret=keys.jwt,
        internal_api_keys=keys.internal,
        webhook_secret=keys.webhook,
        summary_llm_api_key=keys.llm,
        access_log=True,
    )
    caller = new_caller()
    token = issue_token(keys.jwt, tenant=caller.tenant, user=caller.user)
    caplog.set_level(logging.DEBUG)
    app = create_app(configured)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            for headers in (
                {"Authorization": f"Bearer {token}"},
                {"Authorization": f"Bearer {token}x"},
                {"Authorization": f"Bearer {keys.internal}"},
                {"Authorization": f"Bearer {keys.jwt}"},
            ):
                await http.get("/api/v1/conversations", headers=headers)
                await http.get(f"/internal/v1/conversations/{uuid.uuid4()}", headers=headers)
                await http.post("/v1/conversations", json={}, headers=headers)
            await http.get("/api/v1/conversations", params={"token": token})
    formatter = JSONFormatter()
    # The test's own client logs the URLs it calls (``httpx`` at INFO, base ``http://test``).
    served = [r for r in caplog.records if not r.getMessage().startswith("HTTP Request: ")]
    text = "\n".join(formatter.format(record) for record in served)
    text += repr(configured) + str(configured.model_dump())
    assert '"msg":"request"' in text
    for name, value in keys.all(token, token + "x").items():
        if name == "database password":
            continue
        assert value not in text, f"{name} appears in the app's log records or settings repr"
