"""Export memory: the server's RSS growth while one user's history streams out.

    python -m bench.export --backend sqlite|postgres --messages 10000 200000 [--database-url URL]

Seeds one user's history as ``bench.search`` does, starts the service as a real process
(``bench.server``), then reads ``GET /api/v1/users/me/export`` to the end while sampling the
process's resident set (``VmRSS`` in ``/proc``) every 20 ms. Growth is the peak during the
export minus the RSS just before it (after a warm-up request). The target is ≤ 50 MB at 200,000
messages: the export streams, so growth should not follow the history's size.
"""

import argparse
import asyncio
import secrets
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import jwt
from sqlalchemy import text

from bench.search import NoEvents, NoJobs, seed
from bench.server import ServiceConfig, ServiceProcess, redis_url_for_run
from conversation_service.config.settings import ConversationSettings
from conversation_service.db.engine import create_engine, read_engine
from conversation_service.db.migrate import upgrade_async
from conversation_service.db.tables import Base
from conversation_service.services.auth import Principal
from conversation_service.services.unit_of_work import Units

SAMPLE_SECONDS = 0.02


def rss_bytes(pid: int) -> int:
    """Resident set size of process ``pid`` (``VmRSS``, from ``/proc``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for {pid}")


async def export_once(service: ServiceProcess, token: str) -> tuple[int, int, int, float]:
    """(RSS before, peak RSS during, bytes read, seconds) of one full export."""
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=service.base_url, headers=headers, timeout=600) as client:
        warm = await client.get("/api/v1/conversations", params={"limit": 1})
        warm.raise_for_status()
        before = rss_bytes(service.pid)
        peak = before
        done = asyncio.Event()

        async def sample() -> None:
            nonlocal peak
            while not done.is_set():
                peak = max(peak, rss_bytes(service.pid))
                await asyncio.sleep(SAMPLE_SECONDS)

        sampler = asyncio.create_task(sample())
        size = 0
        start = time.perf_counter()
        async with client.stream("GET", "/api/v1/users/me/export") as response:
            response.raise_for_status()
            async for chunk in response.aiter_bytes():
                size += len(chunk)
        seconds = time.perf_counter() - start
        done.set()
        await sampler
        peak = max(peak, rss_bytes(service.pid))
    return before, peak, size, seconds


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backend", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--database-url")
    parser.add_argument("--redis-url")
    parser.add_argument("--messages", type=int, nargs="+", default=[10_000, 200_000])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="conversation-bench-export-") as workdir:
        await run(args, Path(workdir))


async def run(args: argparse.Namespace, workdir: Path) -> None:
    """Seed each size in turn and export it from a fresh service process."""
    url = args.database_url or f"sqlite+aiosqlite:///{workdir / 'export.db'}"
    engine = create_engine(ConversationSettings(database_url=url))
    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.drop_all)
        await conn.execute(text("DROP TABLE IF EXISTS alembic_version"))
    await upgrade_async(engine)
    units = Units(engine, NoJobs(), NoEvents(), reader=read_engine(engine))
    principal = Principal(tenant_id="bench", user_id=f"u-{uuid.uuid4().hex[:8]}")
    print(f"backend={args.backend}")
    done = 0
    with redis_url_for_run(args.redis_url, "redis://127.0.0.1:6379/0") as redis_url:
        config = ServiceConfig(
            database_url=url,
            redis_url=redis_url,
            jwt_secret=secrets.token_urlsafe(48),
            internal_key=secrets.token_urlsafe(24),
        )
        token = jwt.encode(
            {"sub": principal.user_id, "tenant": principal.tenant_id, "exp": 4102444800},
            config.jwt_secret,
            algorithm="HS256",
        )
        for total in sorted(args.messages):
            await seed(units, principal, total, done)
            done = total
            # A fresh process per size: one export's freed memory does not hide the next's.
            async with ServiceProcess(config, workdir / "service.log") as service:
                before, peak, size, seconds = await export_once(service, token)
            mb = 1024 * 1024
            print(
                f"  {total:>9,} messages: {size / mb:7.1f} MB exported in {seconds:6.1f} s, "
                f"RSS {before / mb:6.1f} → peak {peak / mb:6.1f} MB, "
                f"growth {(peak - before) / mb:5.1f} MB"
            )
    await engine.dispose()


if __name__ == "__main__":
    asyncio.run(main())
