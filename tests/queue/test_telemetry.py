"""OpenTelemetry: one trace from an append through its jobs in a real worker to the callback.

The API and a real ``conversation-service worker`` export to a local OTLP/HTTP receiver that
decodes the protobuf requests; the callback receiver sees the ``traceparent`` it was sent.
Without ``OTEL_*`` variables nothing of the SDK is loaded and job rows carry no trace.
"""

import logging
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator

import httpx
import orjson
import pytest
from redis import Redis as SyncRedis
from sqlalchemy import update

from conversation_service.config.settings import ConversationSettings
from conversation_service.db.tables import jobs_table
from conversation_service.main import create_app
from conversation_service.observability import JSONFormatter
from conversation_service.telemetry import Telemetry, enabled, trace_carrier
from tests.conftest import create_conversation, new_caller
from tests.live_server import service_env
from tests.otlp_receiver import OtlpReceiver, ReceivedSpan, run_otlp_receiver
from tests.queue.conftest import QueueEnv, env_for, queue_redis_url, queue_settings
from tests.receiver import Receiver

SERVER, CLIENT, CONSUMER = 2, 3, 5  # OTLP span kinds


@pytest.fixture
def otlp() -> Iterator[OtlpReceiver]:
    with run_otlp_receiver() as receiver:
        yield receiver


@pytest.fixture
async def traced_env(
    settings: ConversationSettings, redis_url: str, receiver: Receiver, otlp: OtlpReceiver
) -> AsyncIterator[QueueEnv]:
    """The queue tests' app, with traces sent to ``otlp`` (the worker gets the same variables)."""
    url = queue_redis_url(redis_url)
    SyncRedis.from_url(url).flushdb()
    queue = queue_settings(settings.database_url, url, receiver)
    otel = {"OTEL_EXPORTER_OTLP_ENDPOINT": otlp.endpoint, "OTEL_BSP_SCHEDULE_DELAY": "100"}
    app = create_app(queue, environ=otel)
    caller = new_caller()
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://test", headers=caller.headers
        ) as client:
            env = QueueEnv(app, queue, {**env_for(queue), **otel}, receiver, client, caller)
            try:
                yield env
            finally:
                async with app.state.resources.engine.begin() as conn:
                    await conn.execute(
                        update(jobs_table)
                        .where(jobs_table.c.status.in_(("pending", "queued", "started")))
                        .values(status="cancelled")
                    )


def _db_system(span: ReceivedSpan) -> object:
    return span.attributes.get("db.system") or span.attributes.get("db.system.name")


async def test_one_trace_runs_from_the_append_through_the_worker_to_the_callback(
    traced_env: QueueEnv, otlp: OtlpReceiver
) -> None:
    cid = (await create_conversation(traced_env.client))["id"]
    before = {job["id"] for job in await traced_env.jobs(conversation_id=uuid.UUID(cid))}
    appended = await traced_env.client.post(
        f"/api/v1/conversations/{cid}/messages", json={"content": "Trace me, please."}
    )
    assert appended.status_code == 201
    jobs = [
        job
        for job in await traced_env.jobs(conversation_id=uuid.UUID(cid))
        if job["id"] not in before
    ]
    assert {job["kind"] for job in jobs} == {"process_message", "deliver_callback"}
    carried = {job["args"]["traceparent"].split("-")[1] for job in jobs}
    assert len(carried) == 1, "every job of the append carries the request's trace"
    [trace_id] = carried

    await traced_env.run_worker()

    def complete(spans: list[ReceivedSpan]) -> bool:
        names = {s.name for s in spans if s.trace_id == trace_id}
        return {"job process_message", "job deliver_callback"} <= names and any(
            s.kind == SERVER for s in spans if s.trace_id == trace_id
        )

    spans = [s for s in otlp.wait_for(complete) if s.trace_id == trace_id]
    [server] = [s for s in spans if s.kind == SERVER]
    assert server.service == "conversation-service"
    assert server.name == "POST /api/v1/conversations/{conversation_id}/messages"
    by_id = {s.span_id: s for s in spans}
    jobs_spans = {s.name: s for s in spans if s.kind == CONSUMER}
    for name in ("job process_message", "job deliver_callback"):
        job = jobs_spans[name]
        assert job.service == "conversation-service-worker"
        assert job.parent_id == server.span_id, f"{name} continues the request's span"
    # SQL and Redis spans on both sides of the queue.
    assert {_db_system(s) for s in spans if s.parent_id == server.span_id} >= {"redis"}
    assert any(
        _db_system(s) in ("sqlite", "postgresql")
        and by_id.get(s.parent_id, server).service == "conversation-service-worker"
        for s in spans
    )

    [created] = [r for r in traced_env.receiver.received if r.event_type == "message.created"]
    version, header_trace, parent, _flags = created.headers["traceparent"].split("-")
    assert (version, header_trace) == ("00", trace_id)
    [request] = [s for s in spans if s.span_id == parent]
    assert request.kind == CLIENT
    assert request.parent_id == jobs_spans["job deliver_callback"].span_id


async def test_json_log_lines_carry_the_trace_and_span_ids(otlp: OtlpReceiver) -> None:
    telemetry = Telemetry.from_environ({"OTEL_EXPORTER_OTLP_ENDPOINT": otlp.endpoint})
    assert telemetry is not None
    formatter = JSONFormatter()
    record = logging.LogRecord("t", logging.INFO, __file__, 1, "inside", None, None)
    try:
        with telemetry.tracer.start_as_current_span("work") as span:
            inside = orjson.loads(formatter.format(record))
            context = span.get_span_context()
        outside = orjson.loads(formatter.format(record))
    finally:
        telemetry.shutdown()
    assert inside["trace_id"] == f"{context.trace_id:032x}"
    assert inside["span_id"] == f"{context.span_id:016x}"
    assert "trace_id" not in outside


def test_traces_are_off_without_otel_variables_and_load_no_sdk() -> None:
    assert not enabled({})
    assert not enabled({"OTEL_SERVICE_NAME": "x"})
    assert not enabled(
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_SDK_DISABLED": "true"}
    )
    assert not enabled(
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_TRACES_EXPORTER": "none"}
    )
    assert enabled({"OTEL_TRACES_EXPORTER": "otlp"})
    assert trace_carrier() is None
    # A fresh interpreter builds the app and formats a log line: no tracer, exporter or
    # instrumentation is imported (redis-py imports the metrics SDK for its own opt-in metrics).
    script = (
        "import sys, logging\n"
        "from conversation_service.main import create_app\n"
        "from conversation_service.config.settings import ConversationSettings\n"
        "from conversation_service.observability import JSONFormatter\n"
        "create_app(ConversationSettings())\n"
        "JSONFormatter().format(logging.LogRecord('t', 20, 'f', 1, 'm', None, None))\n"
        "loaded = ('opentelemetry.sdk.trace', 'opentelemetry.exporter',\n"
        "          'opentelemetry.instrumentation')\n"
        "print(sorted(m for m in sys.modules if m.startswith(loaded)))\n"
    )
    env = {k: v for k, v in service_env({}).items() if not k.startswith("OTEL_")}
    out = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, check=True, timeout=60
    )
    assert out.stdout.strip() == b"[]", out.stderr.decode()[-2000:]


async def test_job_rows_carry_no_trace_when_traces_are_off(queue_env: QueueEnv) -> None:
    cid = (await create_conversation(queue_env.client))["id"]
    await queue_env.client.post(f"/api/v1/conversations/{cid}/messages", json={"content": "hi"})
    jobs = await queue_env.jobs(conversation_id=uuid.UUID(cid))
    assert jobs
    assert all("traceparent" not in job["args"] for job in jobs)
