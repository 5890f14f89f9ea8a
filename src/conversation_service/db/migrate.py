"""Programmatic Alembic: ``conversation-service migrate`` and the head check used by ``serve``."""

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy.ext.asyncio import AsyncEngine

from conversation_service.config.settings import ConversationSettings

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def alembic_config(database_url: str | None = None) -> Config:
    """An Alembic config pointing at the packaged migrations (no alembic.ini needed)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if database_url is not None:
        config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def head_revision() -> str:
    """The newest migration revision shipped with this release."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def upgrade(settings: ConversationSettings, revision: str = "head") -> None:
    """Apply migrations up to ``revision`` (blocking; runs its own event loop)."""
    command.upgrade(alembic_config(settings.database_url), revision)


async def upgrade_async(engine: AsyncEngine, revision: str = "head") -> None:
    """Apply migrations on an existing engine (used by tests and the dev launcher)."""

    def run(sync_conn: object) -> None:
        config = alembic_config()
        config.attributes["connection"] = sync_conn
        command.upgrade(config, revision)

    async with engine.begin() as conn:
        await conn.run_sync(run)


def downgrade(settings: ConversationSettings, revision: str = "base") -> None:
    """Revert migrations down to ``revision``."""
    command.downgrade(alembic_config(settings.database_url), revision)


__all__ = ["downgrade", "head_revision", "upgrade", "upgrade_async"]
