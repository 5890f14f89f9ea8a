"""Callbacks go only to allowlisted hosts, never follow a redirect, and are signed so that a
receiver verifies them and refuses replays older than the Standard Webhooks tolerance.

Every address here is loopback: the allowlist holds 127.0.0.1, and a trap receiver listens on
127.0.0.2 to prove that nothing reaches a host outside it. No test sends traffic anywhere else.
"""

import base64
import secrets
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from conversation_service.config.settings import DEV_WEBHOOK_SECRET, ConversationSettings
from conversation_service.errors import ValidationError
from conversation_service.queue.consumer import run_job
from conversation_service.services import callbacks, processing
from conversation_service.services.outbox import record_jobs
from conversation_service.utils.clock import utcnow
from tests.conftest import make_settings
from tests.receiver import Receiver, run_receiver


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """The orchestrator's receiver, on the allowlisted 127.0.0.1."""
    with run_receiver(DEV_WEBHOOK_SECRET) as state:
        yield state


@pytest.fixture
def trap() -> Iterator[Receiver]:
    """A receiver on 127.0.0.2, outside the allowlist: it must never be called."""
    with run_receiver(DEV_WEBHOOK_SECRET, host="127.0.0.2") as state:
        yield state


def callback_settings(settings: ConversationSettings, receiver: Receiver) -> ConversationSettings:
    return make_settings(
        settings.database_url,
        settings.effective_redis_url(),
        orchestrator_callback_url=receiver.url,
        callback_allowed_hosts="127.0.0.1",
        callback_max_attempts=1,
        callback_timeout_seconds=2.0,
    )


async def deliver_to(engine: Any, settings: ConversationSettings, url: str) -> dict[str, Any]:
    """Record a delivery to ``url`` (as if the allowlist had changed since) and run its job
    the way a worker does, with the worker's own HTTP client."""
    async with engine.begin() as conn:
        spec = await callbacks.record_callback(
            conn,
            settings,
            tenant_id=f"t-{uuid.uuid4().hex[:8]}",
            conversation_id=None,
            event_type="task.completed",
            data={"probe": True},
            url=url,
        )
        await record_jobs(conn, [spec])
    await run_job(str(spec.id), processing.deliver_callback, settings)
    async with engine.connect() as conn:
        return await callbacks.delivery_with_attempts(conn, uuid.UUID(spec.args["delivery_id"]))


async def test_a_host_outside_the_allowlist_is_never_called(
    settings: ConversationSettings, engine: Any, receiver: Receiver, trap: Receiver
) -> None:
    configured = callback_settings(settings, receiver)
    delivery = await deliver_to(engine, configured, trap.url)
    assert delivery["status"] == "failed"
    assert delivery["attempts"][0]["status_code"] is None
    assert delivery["attempts"][0]["error"].startswith("refused")
    assert trap.received == []


async def test_redirects_are_refused_and_never_followed(
    settings: ConversationSettings, engine: Any, receiver: Receiver, trap: Receiver
) -> None:
    configured = callback_settings(settings, receiver)
    with run_receiver(DEV_WEBHOOK_SECRET) as allowed_target:
        # Outside the allowlist, and inside it: neither is followed.
        for target in (trap.url, allowed_target.url):
            receiver.redirect_to = target
            receiver.received.clear()
            delivery = await deliver_to(engine, configured, receiver.url)
            assert delivery["status"] == "failed", target
            assert delivery["attempts"][0]["status_code"] == 307
            assert "redirect refused" in delivery["attempts"][0]["error"]
            assert len(receiver.received) == 1
        assert allowed_target.received == []
    assert trap.received == []


ALLOWED = ("http://127.0.0.1/hook", "https://127.0.0.1:8443/hook", "http://127.0.0.1#@127.0.0.2/")
LOOK_ALIKES = (
    "http://127.0.0.2/hook",
    "http://2130706434/hook",  # 127.0.0.2 as one decimal number
    "http://0x7f000002/hook",
    "http://0177.0.0.2/hook",
    "http://127.1/hook",
    "http://[::ffff:127.0.0.2]/hook",
    "http://[::1]/hook",
    "http://localhost/hook",
    "http://127.0.0.1.nip.io/hook",
    "http://127.0.0.1@127.0.0.2/hook",
    "http://user:pw@127.0.0.1/hook",
    "http://127.0.0.1:99999/hook",
    "http://127.0.0.1\\@127.0.0.2/hook",
    "http:///127.0.0.1/hook",
    "file:///etc/passwd",
    "gopher://127.0.0.1/hook",
    "ftp://127.0.0.1/hook",
    "javascript:alert(1)",
    "//127.0.0.2/hook",
    "127.0.0.1/hook",
)


def test_the_allowlist_refuses_look_alike_hosts_and_agrees_with_the_http_client(
    settings: ConversationSettings,
) -> None:
    configured = make_settings(
        settings.database_url, settings.effective_redis_url(), callback_allowed_hosts="127.0.0.1"
    )
    for url in ALLOWED:
        callbacks.check_url(url, configured)
    for url in LOOK_ALIKES:
        try:
            callbacks.check_url(url, configured)
        except ValidationError:
            continue
        # Accepted: then the client must connect to exactly the host that was checked.
        assert httpx.URL(url).host == "127.0.0.1", url
    for url in ALLOWED:
        assert httpx.URL(url).host == "127.0.0.1"


async def test_signatures_verify_and_replays_outside_the_tolerance_are_refused(
    settings: ConversationSettings, engine: Any, receiver: Receiver
) -> None:
    configured = callback_settings(settings, receiver)
    captured: list[httpx.Request] = []

    def capture(request: httpx.Request) -> httpx.Response:
        captured.append(request)
        return httpx.Response(200)

    async with engine.begin() as conn:
        spec = await callbacks.record_callback(
            conn,
            configured,
            tenant_id="t-signing",
            conversation_id=None,
            event_type="task.completed",
            data={"job_id": "j"},
            url=receiver.url,
        )
    delivery_id = uuid.UUID(spec.args["delivery_id"])
    async with httpx.AsyncClient(transport=httpx.MockTransport(capture)) as client:
        await callbacks.deliver(engine, configured, delivery_id, client, final=True)
    (genuine,) = captured
    body = genuine.content
    headers = {k: v for k, v in genuine.headers.items() if k.startswith("webhook-")}
    hook = Webhook(DEV_WEBHOOK_SECRET)
    assert hook.verify(body, headers)["data"] == {"job_id": "j"}

    def signed(at_offset: timedelta, secret: str = DEV_WEBHOOK_SECRET) -> dict[str, str]:
        when = utcnow() + at_offset
        return {
            "webhook-id": headers["webhook-id"],
            "webhook-timestamp": str(int(when.timestamp())),
            "webhook-signature": Webhook(secret).sign(headers["webhook-id"], when, body.decode()),
        }

    other_secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
    attempts = {
        "genuine, within the tolerance": (body, headers, True),
        "the same event captured 6 minutes ago": (body, signed(timedelta(minutes=-6)), False),
        "a timestamp 6 minutes ahead": (body, signed(timedelta(minutes=6)), False),
        "a tampered body": (body.replace(b'"j"', b'"k"'), headers, False),
        "signed with another secret": (body, signed(timedelta(0), other_secret), False),
        "no signature": (body, {**headers, "webhook-signature": ""}, False),
    }
    async with httpx.AsyncClient() as client:
        for name, (content, sent, accepted) in attempts.items():
            response = await client.post(
                receiver.url,
                content=content,
                headers={**sent, "content-type": "application/json"},
            )
            assert response.status_code == (200 if accepted else 401), name
            assert receiver.received[-1].verified is accepted, name
    with pytest.raises(WebhookVerificationError):
        hook.verify(body, signed(timedelta(minutes=-6)))
    # Every attempt of a delivery carries the same webhook-id, so a receiver drops repeats.
    assert headers["webhook-id"] == callbacks.webhook_id(delivery_id)
