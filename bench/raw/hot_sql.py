"""The SQL of the hot operations' work floor (``bench.raw.hot`` runs it with the Redis commands).

Captured with ``python -m bench.capture`` on commit 63b7e0b (the statements the service's
drivers executed, read from the PostgreSQL wire protocol and from sqlite3's trace callback; the
Redis commands from ``MONITOR``), in steady state (fourth run of each operation):

* append: PostgreSQL one CTE statement (conversation bump, message, ``jobs`` row, session
  touch), SQLite the same as five statements in ``BEGIN IMMEDIATE``; then the event (one Lua
  script: XADD, PUBLISH, EXPIRE), the RQ enqueue (one script: EXISTS, HSET, RPUSH) and SADD.
* agent turn: create (read the conversation; bump + INSERT in a transaction; the partial-reply
  script: HSETNX, EXPIRE, TIME, ZADD; the event) and complete (read the message; UPDATE message,
  UPDATE conversation, read tenant, INSERT ``jobs`` in a transaction; the partial read script:
  HGETALL, HDEL; the event; DEL; ZREM; the RQ enqueue; SADD).
* history page: one SELECT (on SQLite it builds each message's JSON in SQL).
* context: policy/summary/session/tracked-context in one joined SELECT, the always-included rows,
  one newest-first chunk of 64 (the conversations here are shorter than a chunk).

Each script's commands go as one pipeline (one round trip, like the script). The rate limiter's
one Redis call per hundred requests and the periodic stale-stream sweep are left out. Keys carry
a ``bench:floor:`` prefix and are deleted at the end. One driver connection, used serially; on
SQLite each operation's statements run in one thread hop (``sqlite3`` via ``asyncio.to_thread``).
"""

from collections.abc import Sequence
from datetime import timedelta

TOKENS = 22
PAGE_LIMIT = 51  # the service asks for one more row than the page to know ``has_more``
CHUNK = 64
MAX_SEQ = 4611686018427387904
SESSION_GAP = timedelta(minutes=30)
_PREFIX = "bench:floor:"
_EVENT = "x" * 560  # an event's JSON (message.created / completed: 520-610 bytes)
_JOB = {"created_at": "2026-12-06T08:28:45.031638Z", "data": "x" * 300, "origin": "high",
        "description": "process_message", "timeout": "180", "status": "queued",
        "enqueued_at": "2026-12-06T08:28:45.031638Z", "meta": "x" * 120}  # fmt: skip

_MESSAGE_COLUMNS = (
    "messages.id, messages.conversation_id, messages.seq, messages.role, messages.content, "
    "messages.content_parts, messages.status, messages.metadata, messages.token_count, "
    "messages.language, messages.sentiment_label, messages.sentiment_score, "
    "messages.sentiment_model, messages.parent_id, messages.created_at, messages.updated_at"
)
_BUMP = (
    "UPDATE conversations SET last_seq=(conversations.last_seq + 1), "
    "message_count=(conversations.message_count + 1), "
    "token_count=(conversations.token_count + {tokens}), updated_at={now}, last_message_at={now} "
    "WHERE conversations.id = {cid} AND conversations.tenant_id = {tenant} "
    "AND conversations.user_id = {user} AND conversations.deleted_at IS NULL "
    "AND conversations.status = 'active' RETURNING conversations.last_seq"
)
_MESSAGE_INSERT = (
    "INSERT INTO messages (id, conversation_id, tenant_id, role, content, content_parts, status, "
    "metadata, parent_id, idempotency_key, created_at, updated_at, tokens_cl100k, tokens_o200k, "
    "token_count, always_include, seq) "
)
_JOB_INSERT = (
    "INSERT INTO jobs (id, tenant_id, conversation_id, message_id, kind, queue, args, status, "
    "attempts, max_attempts, rq_job_id, dedupe_key, callback_url, created_at, updated_at) "
)
_READ_CONVERSATION = (
    "SELECT conversations.tenant_id, conversations.user_id FROM conversations "
    "WHERE conversations.id = {0} AND conversations.deleted_at IS NULL"
)
_READ_MESSAGE = (
    "SELECT messages.id, messages.conversation_id, messages.role, messages.content, "
    "messages.status, messages.metadata, messages.token_count FROM messages "
    "JOIN conversations ON conversations.id = messages.conversation_id "
    "WHERE messages.id = {0} AND messages.conversation_id = {1} AND messages.deleted_at IS NULL "
    "AND conversations.deleted_at IS NULL"
)
_COMPLETE = (
    "UPDATE messages SET content={0}, status={1}, metadata={2}, token_count={3}, "
    "tokens_cl100k={4}, tokens_o200k={5}, always_include={6}, updated_at={7} "
    f"WHERE messages.id = {{8}} RETURNING {_MESSAGE_COLUMNS}"
)
_ADD_TOKENS = (
    "UPDATE conversations SET token_count=(conversations.token_count + {0}), updated_at={1} "
    "WHERE conversations.id = {2}"
)
_TENANT = "SELECT conversations.tenant_id FROM conversations WHERE conversations.id = {0}"
_PAGE_WHERE = (
    "FROM messages JOIN conversations ON conversations.id = messages.conversation_id "
    "WHERE messages.conversation_id = {0} AND messages.deleted_at IS NULL AND messages.seq > {1} "
    "AND messages.seq < {2} AND conversations.tenant_id = {3} AND conversations.user_id = {4} "
    "AND conversations.deleted_at IS NULL ORDER BY messages.seq DESC LIMIT {5}"
)
_SQLITE_WIRE = (
    "SELECT json_object( 'seq', messages.seq, 'role', messages.role, 'content', messages.content, "
    "'content_parts', CASE WHEN messages.content_parts = 'null' THEN NULL "
    "ELSE json(messages.content_parts) END, 'status', messages.status, 'metadata', "
    "json(messages.metadata), 'token_count', messages.token_count, 'language', messages.language, "
    "'sentiment', CASE WHEN messages.sentiment_label IS NULL THEN NULL ELSE json_object( 'label', "
    "messages.sentiment_label, 'score', messages.sentiment_score, 'model', "
    "messages.sentiment_model) END, 'parent_id', CASE WHEN messages.parent_id IS NULL THEN NULL "
    "ELSE substr(messages.parent_id, 1, 8) || '-' || substr(messages.parent_id, 9, 4) || '-' || "
    "substr(messages.parent_id, 13, 4) || '-' || substr(messages.parent_id, 17, 4) || '-' || "
    "substr(messages.parent_id, 21, 12) END) AS wire, messages.id AS id_text, "
    "messages.created_at AS created_text, messages.updated_at AS updated_text, messages.seq "
)
_POLICY = (
    "SELECT conversations.memory_policy, summaries.content AS summary_content, summaries.version "
    "AS summary_version, summaries.covers_until_seq AS summary_covers_until_seq, "
    "summaries.token_count AS summary_token_count, summaries.tokens_cl100k AS "
    "summary_tokens_cl100k, summaries.tokens_o200k AS summary_tokens_o200k, summaries.method AS "
    "summary_method, summaries.created_at AS summary_created_at, sessions.id AS session_id, "
    "sessions.context AS session_context, tracked_contexts.data AS tracked_data "
    "FROM conversations LEFT OUTER JOIN summaries ON summaries.conversation_id = conversations.id "
    "AND summaries.version = (SELECT max(newer.version) AS max_1 FROM summaries AS newer "
    "WHERE newer.conversation_id = conversations.id) LEFT OUTER JOIN sessions ON sessions.id = "
    "(SELECT active.id FROM sessions AS active WHERE active.conversation_id = conversations.id "
    "AND active.ended_at IS NULL AND active.last_activity_at > {0} ORDER BY active.id DESC "
    "LIMIT {1}) LEFT OUTER JOIN tracked_contexts ON tracked_contexts.conversation_id = "
    "conversations.id WHERE conversations.id = {2} AND conversations.deleted_at IS NULL"
)
_WINDOW_COLUMNS = f"{_MESSAGE_COLUMNS}, messages.tokens_cl100k, messages.tokens_o200k"
_ALWAYS = (
    f"SELECT {_WINDOW_COLUMNS} FROM messages WHERE messages.conversation_id = {{0}} "
    "AND messages.always_include AND messages.deleted_at IS NULL ORDER BY messages.seq"
)
_CHUNK = (
    f"SELECT {_WINDOW_COLUMNS} FROM messages WHERE messages.conversation_id = {{0}} "
    "AND messages.deleted_at IS NULL AND messages.seq > {1} AND messages.seq < {2} "
    "ORDER BY messages.seq DESC LIMIT {3}"
)


def _pg(template: str, *types: str) -> str:
    """``template`` with ``$n::TYPE`` parameters, as SQLAlchemy's asyncpg dialect sends them."""
    return template.format(*(f"${i}::{t}" for i, t in enumerate(types, start=1)))


def _q(template: str, count: int) -> str:
    return template.format(*("?" * count))


_TS = "TIMESTAMP WITH TIME ZONE"


def _select_values(first: int, types: Sequence[str]) -> str:
    return ", ".join(f"${first + i}::{t} AS anon_{first + i}" for i, t in enumerate(types))


_MSG_TYPES = ("UUID", "UUID", "VARCHAR", "VARCHAR", "VARCHAR", "JSONB", "VARCHAR", "JSONB",
              "UUID", "VARCHAR", _TS, _TS, "INTEGER", "INTEGER", "INTEGER", "BOOLEAN")  # fmt: skip
_JOB_TYPES = ("UUID", "VARCHAR", "UUID", "UUID", "VARCHAR", "VARCHAR", "JSONB", "VARCHAR",
              "INTEGER", "INTEGER", "VARCHAR", "VARCHAR", "VARCHAR", _TS, _TS)  # fmt: skip
_PG_BUMP = _BUMP.format(
    tokens="$32::INTEGER", now=f"$33::{_TS}", cid="$34::UUID", tenant="$35::VARCHAR",
    user="$36::VARCHAR",
)  # fmt: skip
PG_APPEND = (
    f"WITH bumped AS ({_PG_BUMP}), inserted AS ({_MESSAGE_INSERT}SELECT "
    f"{_select_values(16, _MSG_TYPES)}, bumped.last_seq AS last_seq FROM bumped "
    f"RETURNING messages.seq), j_job AS ({_JOB_INSERT}SELECT {_select_values(1, _JOB_TYPES)} "
    "WHERE EXISTS (SELECT inserted.seq FROM inserted)), touched AS (UPDATE sessions SET "
    f"last_activity_at=$33::{_TS} WHERE sessions.conversation_id = $34::UUID AND "
    f"sessions.ended_at IS NULL AND sessions.last_activity_at > $37::{_TS} AND (EXISTS (SELECT "
    "inserted.seq FROM inserted)) RETURNING sessions.id) SELECT inserted.seq, (SELECT touched.id "
    "FROM touched LIMIT 1) AS session_id FROM inserted"
)
PG_AGENT_CREATE = (
    "WITH bumped AS ("
    + _BUMP.format(
        tokens="$17::INTEGER",
        now=f"$18::{_TS}",
        cid="$19::UUID",
        tenant="$20::VARCHAR",
        user="$21::VARCHAR",
    )
    + f") {_MESSAGE_INSERT}SELECT {_select_values(1, _MSG_TYPES)}, bumped.last_seq FROM bumped "
    "RETURNING messages.seq"
)
PG_READ_CONVERSATION = _pg(_READ_CONVERSATION, "UUID")
PG_READ_MESSAGE = _pg(_READ_MESSAGE, "UUID", "UUID") + " FOR UPDATE OF messages"
PG_COMPLETE = _pg(_COMPLETE, "VARCHAR", "VARCHAR", "JSONB", "INTEGER", "INTEGER", "INTEGER",
                  "BOOLEAN", _TS, "UUID")  # fmt: skip
PG_ADD_TOKENS = _pg(_ADD_TOKENS, "BIGINT", _TS, "UUID")
PG_TENANT = _pg(_TENANT, "UUID")
PG_JOB = (
    f"{_JOB_INSERT}VALUES ({', '.join(f'${i}::{t}' for i, t in enumerate(_JOB_TYPES, 1))}) "
    "ON CONFLICT DO NOTHING"
)
PG_PAGE = f"SELECT {_MESSAGE_COLUMNS} " + _pg(
    _PAGE_WHERE, "UUID", "BIGINT", "BIGINT", "VARCHAR", "VARCHAR", "INTEGER"
)
PG_POLICY = _pg(_POLICY, _TS, "INTEGER", "UUID")
PG_ALWAYS = _pg(_ALWAYS, "UUID")
PG_CHUNK = _pg(_CHUNK, "UUID", "BIGINT", "BIGINT", "INTEGER")

_SQ_BUMP = _BUMP.format(tokens="?", now="?", cid="?", tenant="?", user="?").replace(
    "RETURNING conversations.last_seq", "RETURNING last_seq"
)
SQLITE_APPEND = (
    "BEGIN IMMEDIATE",
    _SQ_BUMP,
    _MESSAGE_INSERT + "SELECT " + ", ".join(f"? AS anon_{i}" for i in range(1, 18)),
    "UPDATE sessions SET last_activity_at=? WHERE sessions.conversation_id = ? AND "
    "sessions.ended_at IS NULL AND sessions.last_activity_at > ? RETURNING id",
    _JOB_INSERT + "SELECT " + ", ".join(f"? AS anon_{i}" for i in range(1, 16)),
)
SQLITE_AGENT_INSERT = (
    "INSERT INTO messages (id, conversation_id, tenant_id, seq, role, content, content_parts, "
    "status, metadata, token_count, tokens_cl100k, tokens_o200k, always_include, parent_id, "
    f"idempotency_key, created_at, updated_at) VALUES ({', '.join('?' * 17)})"
)
SQLITE_COMPLETE = (
    _q(_COMPLETE, 9).replace("RETURNING messages.", "RETURNING ").replace(", messages.", ", ")
)
SQLITE_JOB = f"{_JOB_INSERT}VALUES ({', '.join('?' * 15)}) ON CONFLICT DO NOTHING"
SQLITE_PAGE = _SQLITE_WIRE + _q(_PAGE_WHERE, 6) + " OFFSET 0"
SQLITE_POLICY = _q(_POLICY, 3).replace("LIMIT ?)", "LIMIT ? OFFSET 0)")
SQLITE_CHUNK = _q(_CHUNK, 4) + " OFFSET 0"

SQLITE_READ_CONVERSATION = _q(_READ_CONVERSATION, 1)
SQLITE_READ_MESSAGE = _q(_READ_MESSAGE, 2)
SQLITE_ADD_TOKENS = _q(_ADD_TOKENS, 3)
SQLITE_TENANT = _q(_TENANT, 1)
SQLITE_ALWAYS = _q(_ALWAYS, 1)
