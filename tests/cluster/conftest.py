"""A real Redis Cluster for the session (``tests/redis_cluster.py``: three primaries with one
replica each). The app under test runs in cluster mode on it (``CONVERSATION_REDIS_MODE=cluster``),
with RQ on the session's standalone Redis (``CONVERSATION_QUEUE_REDIS_URL``), on one database:
PostgreSQL when the suite has it.
"""

from collections.abc import AsyncIterator, Iterator

import pytest
from fastapi import FastAPI

from conversation_service.config.settings import ConversationSettings
from conversation_service.db.engine import create_engine
from conversation_service.db.migrate import upgrade_async
from conversation_service.main import create_app
from tests.conftest import POSTGRES_URL, make_settings
from tests.redis_cluster import LocalCluster, available, local_cluster


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """The session's Redis Cluster, up and ``cluster_state:ok``."""
    if not available():
        pytest.skip("the Redis Cluster tests need redis-server and redis-cli (Debian: redis)")
    with local_cluster(tmp_path_factory.mktemp("redis-cluster")) as cluster:
        yield cluster


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One database for the cluster tests: PostgreSQL when the suite has it, else SQLite."""
    if POSTGRES_URL:
        return POSTGRES_URL
    return f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('cluster-sqlite') / 'test.db'}"


@pytest.fixture(scope="session")
async def settings(
    database_url: str, redis_url: str, redis_cluster: LocalCluster
) -> ConversationSettings:
    """Cluster mode on the session's cluster; RQ on the session's standalone Redis."""
    settings = make_settings(
        database_url, redis_cluster.url, redis_mode="cluster", queue_redis_url=redis_url
    )
    engine = create_engine(settings, null_pool=True)
    try:
        # Migrate only: the standalone tests' apps of this session may be using the schema.
        await upgrade_async(engine)
    finally:
        await engine.dispose()
    return settings


@pytest.fixture(scope="session")
async def app(settings: ConversationSettings) -> AsyncIterator[FastAPI]:
    """The real app in cluster mode, its lifespan running."""
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        yield app
