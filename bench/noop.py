"""RQ's own floor for ``queue-throughput``: a no-op job and a burst worker that runs it.

``python -m bench.noop REDIS_URL QUEUE [--workers N]`` from the repository root runs a
``SimpleWorker`` (or, with N > 1, RQ's ``WorkerPool`` of them, the floor of
``conversation-service worker --pool N``) in burst mode: it exits once the queue is empty.
"""

import argparse
import sys
from collections.abc import Sequence

from redis import Redis
from rq import Queue, SimpleWorker
from rq.worker_pool import WorkerPool


def noop() -> None:
    """The job: nothing at all, so only RQ's own cost is measured."""


def main(argv: Sequence[str] | None = None) -> int:
    """Run a burst worker (pool) on one queue until it is empty."""
    parser = argparse.ArgumentParser(prog="python -m bench.noop")
    parser.add_argument("redis_url")
    parser.add_argument("queue")
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args(argv)
    connection = Redis.from_url(args.redis_url)
    if args.workers > 1:
        WorkerPool(
            [args.queue],
            connection=connection,
            num_workers=args.workers,
            worker_class=SimpleWorker,
        ).start(burst=True)
    else:
        SimpleWorker([Queue(args.queue, connection=connection)], connection=connection).work(
            with_scheduler=True, burst=True
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
