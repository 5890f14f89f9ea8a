"""What every raw backend shares: the interfaces, the columns and the rows the service writes."""

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import uuid_utils

from conversation_service.db.tables import messages_table
from conversation_service.services.message_store import MESSAGE_COLUMNS

_BASE_COLUMNS = (
    "id",
    "conversation_id",
    "tenant_id",
    "role",
    "content",
    "content_parts",
    "status",
    "metadata",
    "parent_id",
    "idempotency_key",
    "created_at",
    "updated_at",
)
# Columns the service fills at append time when its schema has them, with representative values:
# the baseline measures the database, not the service's token counting.
_COMPUTED_VALUES: dict[str, Any] = {
    "token_count": 33,
    "tokens_cl100k": 33,
    "tokens_o200k": 33,
    "always_include": False,
}
_COMPUTED = tuple(name for name in _COMPUTED_VALUES if name in messages_table.c)
INSERT_COLUMNS = (*_BASE_COLUMNS, *_COMPUTED, "seq")
# The columns a history page returns, as the service selects them.
SELECT_COLUMNS = tuple(column.name for column in MESSAGE_COLUMNS)


class RawConnection(Protocol):
    """One driver connection, used serially."""

    async def insert_message(
        self, conversation_id: uuid.UUID, tenant_id: str, seq: int, content: str
    ) -> None:
        """Insert and commit one user message with the given ``seq``."""
        ...

    async def newest_messages(self, conversation_id: uuid.UUID, limit: int) -> int:
        """Fetch the newest ``limit`` visible messages; return how many rows came back."""
        ...

    async def close(self) -> None:
        """Close the connection."""
        ...


class RawPool(Protocol):
    """A pool of driver connections; each insert acquires one and gives it back."""

    async def insert_message(
        self, conversation_id: uuid.UUID, tenant_id: str, seq: int, content: str
    ) -> None:
        """Insert and commit one user message on a pooled connection."""
        ...

    async def close(self) -> None:
        """Close every connection."""
        ...


class RawBackend(Protocol):
    """Connections, pools and bulk seeding for one database."""

    name: str

    async def connect(self) -> RawConnection:
        """Open one connection."""
        ...

    async def create_pool(self, size: int) -> RawPool:
        """Open a pool of ``size`` connections."""
        ...

    async def seed(
        self, conversation_id: uuid.UUID, tenant_id: str, count: int, content: str
    ) -> None:
        """Bulk-insert ``count`` messages (seq 1..count) and update the conversation's counters."""
        ...

    async def remove_tenant(self, tenant_id: str) -> None:
        """Delete the tenant's conversations (their messages cascade)."""
        ...


def new_id() -> uuid.UUID:
    """A UUIDv7, as the service generates them."""
    return uuid.UUID(bytes=uuid_utils.uuid7().bytes)


def message_row(
    conversation_id: uuid.UUID, tenant_id: str, seq: int, content: str, moment: datetime
) -> tuple[Any, ...]:
    """One message row in ``INSERT_COLUMNS`` order, with driver-neutral Python values."""
    # content_parts None is stored as JSON null by the service's JSON type.
    base = (new_id(), conversation_id, tenant_id, "user", content, "null", "completed", "{}",
            None, None, moment, moment)  # fmt: skip
    return (*base, *(_COMPUTED_VALUES[name] for name in _COMPUTED), seq)


def new_message_row(
    conversation_id: uuid.UUID, tenant_id: str, seq: int, content: str
) -> tuple[Any, ...]:
    """A row stamped now, as an append writes it."""
    return message_row(conversation_id, tenant_id, seq, content, datetime.now(UTC))


def seed_rows(
    conversation_id: uuid.UUID, tenant_id: str, count: int, content: str
) -> Iterator[tuple[Any, ...]]:
    """``count`` rows with seq 1..count, one second apart, ending now."""
    start = datetime.now(UTC) - timedelta(seconds=count)
    for seq in range(1, count + 1):
        moment = start + timedelta(seconds=seq)
        yield message_row(conversation_id, tenant_id, seq, f"{content} #{seq}", moment)


# Seeded histories are one line of the message tree (schema 0006+: parent links, the root run,
# the active leaf, summaries ending at a message), as migration 0006 makes existing ones. The
# baseline's older schema has none of these columns, so each seeder checks first.
HAS_TREE_POSTGRES = (
    "SELECT count(*) FROM information_schema.columns "
    "WHERE table_name = 'conversations' AND column_name = 'active_leaf_id'"
)
HAS_TREE_SQLITE = (
    "SELECT count(*) FROM pragma_table_info('conversations') WHERE name = 'active_leaf_id'"
)


def tree_statements(placeholder: str) -> tuple[str, ...]:
    """The statements that link a seeded conversation (``placeholder`` = its id) as a line."""
    return (
        "UPDATE messages SET branch_id = conversation_id, parent_id = (SELECT p.id FROM messages "
        "AS p WHERE p.conversation_id = messages.conversation_id AND p.seq = messages.seq - 1) "
        f"WHERE conversation_id = {placeholder}",
        "UPDATE conversations SET active_branch_id = id, active_leaf_id = (SELECT m.id FROM "
        "messages AS m WHERE m.conversation_id = conversations.id AND m.seq = "
        f"conversations.last_seq) WHERE id = {placeholder}",
        "UPDATE summaries SET covers_until_message_id = (SELECT m.id FROM messages AS m WHERE "
        "m.conversation_id = summaries.conversation_id AND m.seq = summaries.covers_until_seq) "
        f"WHERE conversation_id = {placeholder}",
    )
