"""Async cores of the background tasks; each takes a ``JobContext`` and returns a JSON result.

They are idempotent: running one twice (a re-dispatch after a lost worker) recomputes the same
values, and a summary is only written for a span no version covers yet.
"""

import logging
import uuid
from collections import Counter
from typing import Any

import httpx
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from conversation_service.analysis.language import detect_language
from conversation_service.analysis.llm_summarizer import LLMSummarizer
from conversation_service.analysis.sentiment import analyze_sentiment as score_sentiment
from conversation_service.analysis.sentiment import label_for, rolling_sentiment
from conversation_service.analysis.summarize import (
    ExtractiveSummarizer,
    Summarizer,
    SummaryInput,
)
from conversation_service.config.settings import ConversationSettings
from conversation_service.db.tables import conversations_table as conversations
from conversation_service.db.tables import messages_table as messages
from conversation_service.errors import ValidationError
from conversation_service.events.log import EventType, summary_lock_key
from conversation_service.models.memory import MemoryStrategy
from conversation_service.services import callbacks, message_tree, summaries
from conversation_service.services.job_context import (
    JobContext,
    RetryableJobError,
    SubjectGoneError,
)
from conversation_service.services.memory_manager import (
    WindowRequest,
    load_window,
    resolve_policy,
)
from conversation_service.services.message_store import count_message_tokens
from conversation_service.services.outbox import JobKind, JobSpec, queue_for
from conversation_service.services.search_text import index_values

log = logging.getLogger(__name__)
SUMMARY_LOCK_SECONDS = 300
_SPAN_READS = message_tree.segment_statements(
    (messages.c.id, messages.c.seq, messages.c.role, messages.c.content, messages.c.language)
)


def normalise_metadata(metadata: dict[str, Any], content: str) -> dict[str, Any]:
    """Canonical forms of the well-known keys, plus text statistics under ``text_stats``."""
    result = {key: value for key, value in metadata.items() if value is not None}
    if isinstance(result.get("channel"), str):
        result["channel"] = result["channel"].strip().lower()
    locale = result.get("locale")
    if isinstance(locale, str) and locale.strip():
        parts = locale.strip().replace("_", "-").split("-")
        result["locale"] = "-".join(
            [parts[0].lower(), *(p.upper() if len(p) == 2 else p for p in parts[1:])]
        )
    result["text_stats"] = {"chars": len(content), "words": len(content.split())}
    return result


async def _message(conn: AsyncConnection, message_id: uuid.UUID) -> Any:
    return (
        await conn.execute(
            select(
                messages.c.id,
                messages.c.conversation_id,
                messages.c.tenant_id,
                messages.c.role,
                messages.c.content,
                messages.c.metadata,
                messages.c.language,
                messages.c.token_count,
                messages.c.sentiment_label,
                messages.c.deleted_at,
                conversations.c.deleted_at.label("conversation_deleted_at"),
                conversations.c.priority,
            )
            .join(conversations, conversations.c.id == messages.c.conversation_id)
            .where(messages.c.id == message_id)
        )
    ).one_or_none()


async def _live_message(conn: AsyncConnection, message_id: uuid.UUID) -> Any:
    """The job's message; ``SubjectGoneError`` if it or its conversation was deleted."""
    row = await _message(conn, message_id)
    if row is None or row.deleted_at is not None:
        raise SubjectGoneError("message deleted")
    if row.conversation_deleted_at is not None:
        raise SubjectGoneError("conversation deleted")
    return row


async def process_message(ctx: JobContext) -> dict[str, Any]:
    """Exact token counts, language, normalised metadata; then sentiment and summary jobs."""
    message_id = ctx.job["message_id"]
    async with ctx.units().write() as uow:
        conn = uow.conn
        row = await _live_message(conn, message_id)
        tokens = await count_message_tokens(row.role, row.content)
        language = detect_language(row.content).code
        await conn.execute(
            update(messages)
            .where(messages.c.id == message_id)
            .values(
                tokens_cl100k=tokens["cl100k_base"],
                tokens_o200k=tokens["o200k_base"],
                token_count=tokens["o200k_base"],
                language=language,
                # Re-stemmed now that the language is known (the append used the fallback).
                **index_values(row.content, language),
                metadata=normalise_metadata(row.metadata, row.content),
            )
        )
        delta = tokens["o200k_base"] - (row.token_count or 0)
        if delta:
            await conn.execute(
                update(conversations)
                .where(conversations.c.id == row.conversation_id)
                .values(token_count=conversations.c.token_count + delta)
            )
        specs: list[JobSpec] = []
        if row.role in ("user", "assistant") and row.content.strip():
            specs.append(
                JobSpec(
                    kind=JobKind.ANALYZE_SENTIMENT,
                    queue=queue_for(JobKind.ANALYZE_SENTIMENT, row.priority),
                    tenant_id=row.tenant_id,
                    conversation_id=row.conversation_id,
                    message_id=message_id,
                    max_attempts=ctx.settings.job_max_attempts,
                    dedupe_key=f"sentiment:{message_id}",
                )
            )
        summary = await summary_job_if_due(
            conn, ctx, row.conversation_id, row.tenant_id, row.priority
        )
        if summary is not None:
            specs.append(summary)
        written = await uow.record(specs)
    return {
        "language": language,
        "token_count": tokens["o200k_base"],
        "followups": [spec.kind.value for spec in written],
    }


async def summary_job_if_due(
    conn: AsyncConnection,
    ctx: JobContext,
    conversation_id: uuid.UUID,
    tenant_id: str,
    priority: str,
) -> JobSpec | None:
    """A summary job when the tokens left out of the window pass the trigger threshold."""
    try:
        window = await load_window(
            conn, conversation_id, WindowRequest(strategy=MemoryStrategy.SUMMARY_BUFFER)
        )
    except ValidationError:
        return None  # the policy's budget cannot even hold the pinned messages
    cut_seq = window.selection.cut_seq
    if not window.selection.truncated or cut_seq is None:
        return None
    floor = window.summary["covers_until_seq"] if window.summary else 0
    outside = await message_tree.path_tokens(conn, conversation_id, window.path, floor, cut_seq)
    if outside < ctx.settings.summary_trigger_tokens:
        return None
    until = await message_tree.message_at(conn, conversation_id, window.path, cut_seq)
    return summary_spec(
        ctx.settings, conversation_id, tenant_id, priority, until_seq=cut_seq, until_message=until
    )


def summary_spec(
    settings: ConversationSettings,
    conversation_id: uuid.UUID,
    tenant_id: str,
    priority: str,
    *,
    until_seq: int,
    until_message: uuid.UUID | None = None,
    queue: str | None = None,
    callback_url: str | None = None,
    notify: bool = False,
) -> JobSpec:
    """A ``generate_summary`` job for the path up to ``until_message`` (seq ``until_seq``; no
    message: the active path), one per span, ever."""
    span = str(until_message) if until_message is not None else str(until_seq)
    return JobSpec(
        kind=JobKind.GENERATE_SUMMARY,
        queue=queue or queue_for(JobKind.GENERATE_SUMMARY, priority),
        tenant_id=tenant_id,
        conversation_id=conversation_id,
        args={
            "until_seq": until_seq,
            "notify": notify,
            **({"until_message": span} if until_message is not None else {}),
        },
        callback_url=callback_url,
        max_attempts=settings.job_max_attempts,
        dedupe_key=None if notify else f"summary:{conversation_id}:{span}",
    )


async def analyze_sentiment(ctx: JobContext) -> dict[str, Any]:
    """Per-message label, score and model; and the rolling conversation-level sentiment."""
    message_id = ctx.job["message_id"]
    async with ctx.units().write() as uow:
        conn = uow.conn
        row = await _live_message(conn, message_id)
        language = row.language or detect_language(row.content).code
        result = score_sentiment(row.content, language)
        await conn.execute(
            update(messages)
            .where(messages.c.id == message_id)
            .values(
                sentiment_label=result.label,
                sentiment_score=result.score,
                sentiment_model=result.model,
            )
        )
        current = (
            await conn.execute(
                select(conversations.c.sentiment_score, conversations.c.sentiment_count)
                .where(conversations.c.id == row.conversation_id)
                .with_for_update()
            )
        ).one()
        if row.sentiment_label is not None:
            # A re-run (the message was scored before): the rolling value already counts it.
            return {
                "label": result.label,
                "score": result.score,
                "model": result.model,
                "conversation_score": current.sentiment_score,
            }
        rolling = rolling_sentiment(current.sentiment_score, current.sentiment_count, result.score)
        event = {
            "message_id": str(message_id),
            "sentiment": {"label": result.label, "score": result.score, "model": result.model},
            "conversation_sentiment": {"label": label_for(rolling), "score": rolling},
        }
        uow.publish(row.conversation_id, EventType.SENTIMENT_UPDATED, event)
        await conn.execute(
            update(conversations)
            .where(conversations.c.id == row.conversation_id)
            .values(
                sentiment_score=rolling,
                sentiment_label=label_for(rolling),
                sentiment_count=conversations.c.sentiment_count + 1,
            )
        )
    return {
        "label": result.label,
        "score": result.score,
        "model": result.model,
        "conversation_score": rolling,
    }


def build_summarizer(
    settings: ConversationSettings,
    client: httpx.AsyncClient | None = None,
    *,
    budget_tokens: int = 4000,
) -> Summarizer:
    """The configured summarizer: extractive (offline, default) or an OpenAI-compatible LLM.

    The extractive summary is kept to about a quarter of the window's budget (≈4 characters a
    token), so the summary never crowds the recent messages out of the window.
    """
    if settings.summarizer == "llm":
        if not settings.summary_llm_url:
            raise ValueError("CONVERSATION_SUMMARY_LLM_URL is required with summarizer=llm")
        key = (
            settings.summary_llm_api_key.get_secret_value()
            if settings.summary_llm_api_key
            else None
        )
        return LLMSummarizer(
            base_url=settings.summary_llm_url,
            model=settings.summary_llm_model,
            api_key=key,
            client=client,
        )
    return ExtractiveSummarizer(max_chars=min(1200, max(160, budget_tokens)))


async def generate_summary(ctx: JobContext) -> dict[str, Any]:
    """A new summary version = previous summary + messages since its cut point (non-destructive)."""
    conversation_id = ctx.job["conversation_id"]
    until_seq = int(ctx.args["until_seq"])
    lock_key = summary_lock_key(conversation_id)
    token = str(ctx.job["id"])
    if not await ctx.redis.set(lock_key, token, nx=True, ex=SUMMARY_LOCK_SECONDS):
        raise RetryableJobError("another summary of this conversation is running")
    try:
        units = ctx.units()
        async with units.read() as reading:
            conn = reading.conn
            stored = (
                await conn.execute(
                    select(
                        conversations.c.memory_policy,
                        conversations.c.deleted_at,
                        conversations.c.active_leaf_id,
                    ).where(conversations.c.id == conversation_id)
                )
            ).one_or_none()
            if stored is None or stored.deleted_at is not None:
                raise SubjectGoneError("conversation deleted")
            stored_policy = stored.memory_policy
            named = ctx.args.get("until_message")
            leaf = uuid.UUID(named) if named else stored.active_leaf_id
            path = await message_tree.path_of(conn, conversation_id, leaf) if leaf else None
            if path is None:
                raise SubjectGoneError("the summarised path is gone")
            latest = await summaries.latest_summary(conn, conversation_id)
            if latest and not await message_tree.holds_message(
                conn, path, latest["covers_until_message_id"]
            ):
                latest = None  # another branch's summary: this path starts afresh
            floor = latest["covers_until_seq"] if latest else 0
            if floor >= until_seq:
                return {"skipped": "already covered", "covers_until_seq": floor}
            span = await message_tree.path_span(
                conn, conversation_id, path, floor, until_seq, _SPAN_READS
            )
            rows = [row for row in span if row["role"] in ("user", "assistant")]
        languages = Counter(row["language"] for row in rows if row["language"])
        language = languages.most_common(1)[0][0] if languages else None
        budget = resolve_policy(stored_policy, WindowRequest()).max_tokens
        summarizer = build_summarizer(ctx.settings, budget_tokens=budget)
        text = await summarizer.summarize(
            latest["content"] if latest else None,
            [SummaryInput(role=r["role"], content=r["content"], seq=r["seq"]) for r in rows],
            language,
        )
        if text is None:
            return {"skipped": "nothing to say", "span": [floor + 1, until_seq]}
        async with units.write() as uow:
            values = await summaries.add_summary(
                uow.conn,
                conversation_id=conversation_id,
                tenant_id=ctx.job["tenant_id"],
                content=text,
                covers_until_seq=until_seq,
                covers_until_message_id=span[-1]["id"] if span else None,
                method=type(summarizer).__name__.removesuffix("Summarizer").lower(),
            )
            summary = {
                "version": values["version"],
                "covers_until_seq": until_seq,
                "text": text,
                "method": values["method"],
            }
            uow.publish(conversation_id, EventType.SUMMARY_UPDATED, {"summary": summary})
        return {"version": values["version"], "covers_until_seq": until_seq}
    finally:
        if await ctx.redis.get(lock_key) == token.encode():
            await ctx.redis.delete(lock_key)


async def deliver_callback(ctx: JobContext) -> dict[str, Any]:
    """One signed attempt; a retryable failure raises so RQ retries with backoff."""
    delivery_id = uuid.UUID(ctx.args["delivery_id"])
    final = ctx.job["attempts"] >= ctx.job["max_attempts"]
    async with httpx.AsyncClient(follow_redirects=False) as client:
        if ctx.instrument_http is not None:
            ctx.instrument_http(client)
        observe = ctx.metrics.callback_attempted if ctx.metrics is not None else None
        try:
            return await callbacks.deliver(
                ctx.engine, ctx.settings, delivery_id, client, final=final, observe=observe
            )
        except callbacks.CallbackFailedError as exc:
            raise RetryableJobError(str(exc)) from exc
