"""``python -m bench.sqlite_trace FILE ARGS…``: the service's CLI, tracing every SQLite statement.

Used by ``bench.capture`` only, never by a measured run: every ``sqlite3`` connection the process
opens (aiosqlite opens them through ``sqlite3.connect`` too) gets a trace callback that appends
each statement, with its values expanded, to FILE.
"""

import sqlite3
import sys
import threading
from typing import Any

from conversation_service.cli import main as cli_main

_lock = threading.Lock()


def main() -> int:
    """Wrap ``sqlite3.connect``, then run the CLI with the remaining arguments."""
    log = open(sys.argv[1], "a", buffering=1)  # noqa: SIM115 - open for the process's life
    connect = sqlite3.connect

    def write(statement: str) -> None:
        with _lock:
            log.write(" ".join(statement.split()) + "\n")

    def traced(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        conn = connect(*args, **kwargs)
        conn.set_trace_callback(write)
        return conn

    sqlite3.connect = traced
    return cli_main(sys.argv[2:])


if __name__ == "__main__":
    sys.exit(main())
