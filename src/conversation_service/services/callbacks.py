"""Signed callbacks to the orchestrator (Standard Webhooks), one attempt row per try.

A delivery is one event for one URL; its id is the ``webhook-id`` header on every attempt, so a
receiver can drop repeats (delivery is at least once). Hosts must be on the allowlist, checked
when the callback is requested and again when it is sent, and redirects are never followed, so
the service cannot be steered to call arbitrary addresses.
"""

import time
import uuid
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

import httpx
import orjson
from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from standardwebhooks import Webhook

from conversation_service.config.settings import ConversationSettings
from conversation_service.db.replica import READ_AFTER_HEADER, commit_position, format_position
from conversation_service.db.tables import callback_attempts_table as attempts
from conversation_service.db.tables import callback_deliveries_table as deliveries
from conversation_service.errors import NotFoundError, ValidationError
from conversation_service.services.outbox import JobKind, JobSpec, queue_for
from conversation_service.utils.clock import new_id, utcnow

RETRYABLE_STATUSES = frozenset({408, 425, 429})


class AttemptObserver(Protocol):
    """Told of each delivery attempt (the worker's callback metrics)."""

    def __call__(self, outcome: str, latency_ms: float, attempt: int, *, final: bool) -> None:
        """One attempt ended with ``outcome``; ``final`` when the delivery ended too."""


class CallbackNotFoundError(NotFoundError):
    """Unknown callback delivery."""

    code = "callback-not-found"
    title = "Callback delivery not found"


class CallbackFailedError(Exception):
    """A retryable delivery failure (timeout, connection error, 5xx, 408/425/429)."""


def allowed_hosts(settings: ConversationSettings) -> frozenset[str]:
    """Allowlisted ``host`` / ``host:port`` entries, plus the orchestrator's own host."""
    hosts = {host.lower() for host in settings.callback_allowed_hosts}
    if settings.orchestrator_callback_url:
        parts = urlsplit(settings.orchestrator_callback_url)
        if parts.hostname:
            hosts.add(parts.hostname.lower())
    return frozenset(hosts)


def check_url(url: str, settings: ConversationSettings) -> None:
    """Refuse URLs that are not http(s) to an allowlisted host (``ValidationError``)."""
    try:
        parts = urlsplit(url)
    except ValueError as exc:  # e.g. "Invalid IPv6 URL"
        raise ValidationError(f"callback_url is not a valid URL: {exc}") from exc
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.username:
        raise ValidationError("callback_url must be an http(s) URL without credentials")
    host = parts.hostname.lower()
    try:
        port = parts.port
    except ValueError as exc:
        raise ValidationError("callback_url has an invalid port") from exc
    hosts = allowed_hosts(settings)
    if host not in hosts and (port is None or f"{host}:{port}" not in hosts):
        raise ValidationError(
            f"callback host {host!r} is not in CONVERSATION_CALLBACK_ALLOWED_HOSTS"
        )


def event_body(event_type: str, data: dict[str, Any]) -> dict[str, Any]:
    """The Standard Webhooks payload shape: type, timestamp, data."""
    return {"type": event_type, "timestamp": utcnow().isoformat(), "data": data}


def webhook_id(delivery_id: uuid.UUID) -> str:
    """The ``webhook-id`` of a delivery (the same on every attempt)."""
    return f"msg_{delivery_id.hex}"


async def record_callback(
    conn: AsyncConnection,
    settings: ConversationSettings,
    *,
    tenant_id: str,
    conversation_id: uuid.UUID | None,
    event_type: str,
    data: dict[str, Any],
    url: str,
    priority: str = "normal",
    urgent: bool = False,
) -> JobSpec:
    """Write a delivery row in the caller's transaction and return its job (not yet recorded)."""
    delivery_id = new_id()
    await conn.execute(
        insert(deliveries).values(
            id=delivery_id,
            tenant_id=tenant_id,
            conversation_id=conversation_id,
            event_type=event_type,
            url=url,
            payload=event_body(event_type, data),
            status="pending",
            attempts=0,
            created_at=utcnow(),
        )
    )
    return delivery_job(
        settings, tenant_id, conversation_id, delivery_id, priority=priority, urgent=urgent
    )


def delivery_job(
    settings: ConversationSettings,
    tenant_id: str,
    conversation_id: uuid.UUID | None,
    delivery_id: uuid.UUID,
    *,
    priority: str = "normal",
    urgent: bool = True,
) -> JobSpec:
    """The outbox job that delivers a recorded callback (urgent: the orchestrator waits on it)."""
    return JobSpec(
        kind=JobKind.DELIVER_CALLBACK,
        queue=queue_for(JobKind.DELIVER_CALLBACK, priority, urgent=urgent),
        tenant_id=tenant_id,
        conversation_id=conversation_id,
        args={"delivery_id": str(delivery_id)},
        max_attempts=settings.callback_max_attempts,
    )


@dataclass(frozen=True, slots=True)
class AttemptOutcome:
    """What one attempt did."""

    delivered: bool
    status_code: int | None
    error: str | None
    retryable: bool
    latency_ms: float = 0.0


async def deliver(
    engine: AsyncEngine,
    settings: ConversationSettings,
    delivery_id: uuid.UUID,
    client: httpx.AsyncClient,
    *,
    final: bool = False,
    observe: AttemptObserver | None = None,
) -> dict[str, Any]:
    """Send one attempt and record it; raise ``CallbackFailedError`` when worth retrying.

    On the ``final`` attempt a retryable failure marks the delivery failed instead. ``observe``
    is told the attempt's outcome (delivered, retrying, failed, refused), its latency, its
    number and whether the delivery ended with it.
    """
    async with engine.connect() as conn:
        # With a read replica, the callback tells the orchestrator a WAL position past the commit
        # that caused it (the job runs after it), so its reads back see what it is told about.
        position = await commit_position(conn) if settings.database_read_url else None
        row = (
            (await conn.execute(select(deliveries).where(deliveries.c.id == delivery_id)))
            .mappings()
            .one_or_none()
        )
    if row is None:
        raise CallbackNotFoundError(f"delivery {delivery_id} not found")
    if row["status"] == "delivered":
        return {"delivered": True, "skipped": "already delivered"}
    outcome = await _attempt(row, settings, client, position)
    attempt_no = row["attempts"] + 1
    async with engine.begin() as conn:
        await conn.execute(
            insert(attempts).values(
                id=new_id(),
                delivery_id=delivery_id,
                attempt=attempt_no,
                status_code=outcome.status_code,
                latency_ms=outcome.latency_ms,
                error=outcome.error,
                created_at=utcnow(),
            )
        )
        retry_later = outcome.retryable and not final
        status = "delivered" if outcome.delivered else ("pending" if retry_later else "failed")
        await conn.execute(
            update(deliveries)
            .where(deliveries.c.id == delivery_id)
            .values(
                attempts=attempt_no,
                status=status,
                last_status_code=outcome.status_code,
                delivered_at=utcnow() if outcome.delivered else None,
            )
        )
    if observe is not None:
        refused = outcome.error is not None and outcome.error.startswith("refused")
        label = "refused" if refused else "retrying" if retry_later else status
        observe(label, outcome.latency_ms, attempt_no, final=not retry_later)
    if retry_later:
        raise CallbackFailedError(outcome.error or f"HTTP {outcome.status_code}")
    return {
        "delivered": outcome.delivered,
        "status_code": outcome.status_code,
        "error": outcome.error,
    }


async def _attempt(
    row: Any, settings: ConversationSettings, client: httpx.AsyncClient, position: int | None
) -> AttemptOutcome:
    try:
        check_url(row["url"], settings)
    except ValidationError as exc:
        return AttemptOutcome(False, None, f"refused: {exc.detail}", retryable=False)
    body = orjson.dumps(row["payload"]).decode()
    msg_id = webhook_id(row["id"])
    timestamp = utcnow()
    signature = Webhook(settings.effective_webhook_secret()).sign(msg_id, timestamp, body)
    headers = {
        "content-type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(timestamp.timestamp())),
        "webhook-signature": signature,
        "user-agent": "conversation-service-webhooks/1",
    }
    if position is not None:
        headers[READ_AFTER_HEADER] = format_position(position)
    started = time.perf_counter()

    def elapsed() -> float:
        return (time.perf_counter() - started) * 1000

    try:
        response = await client.post(
            row["url"], content=body, headers=headers, timeout=settings.callback_timeout_seconds
        )
    except httpx.TimeoutException:
        return AttemptOutcome(False, None, "timeout", retryable=True, latency_ms=elapsed())
    except httpx.HTTPError as exc:
        error = f"{type(exc).__name__}: {exc}"[:500]
        return AttemptOutcome(False, None, error, retryable=True, latency_ms=elapsed())
    code = response.status_code
    latency = elapsed()
    if 200 <= code < 300:
        return AttemptOutcome(True, code, None, retryable=False, latency_ms=latency)
    if 300 <= code < 400:
        error = "redirect refused (never followed)"
        return AttemptOutcome(False, code, error, retryable=False, latency_ms=latency)
    retryable = code >= 500 or code in RETRYABLE_STATUSES
    return AttemptOutcome(False, code, f"HTTP {code}", retryable=retryable, latency_ms=latency)


async def delivery_with_attempts(conn: AsyncConnection, delivery_id: uuid.UUID) -> dict[str, Any]:
    """A delivery and its attempts, for operators and the orchestrator."""
    row = (
        (await conn.execute(select(deliveries).where(deliveries.c.id == delivery_id)))
        .mappings()
        .one_or_none()
    )
    if row is None:
        raise CallbackNotFoundError(f"delivery {delivery_id} not found")
    tries = (
        (
            await conn.execute(
                select(attempts)
                .where(attempts.c.delivery_id == delivery_id)
                .order_by(attempts.c.attempt)
            )
        )
        .mappings()
        .all()
    )
    return {
        "id": row["id"],
        "webhook_id": webhook_id(row["id"]),
        "event_type": row["event_type"],
        "url": row["url"],
        "status": row["status"],
        "attempts": [
            {
                "attempt": t["attempt"],
                "status_code": t["status_code"],
                "latency_ms": t["latency_ms"],
                "error": t["error"],
                "created_at": t["created_at"],
            }
            for t in tries
        ],
        "created_at": row["created_at"],
        "delivered_at": row["delivered_at"],
    }
