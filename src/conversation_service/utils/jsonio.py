"""The service's one JSON writer for API data: orjson, times as ``…Z``, ids as their string.

Responses, the event log, WebSocket answers and JSON columns all write API data through it, so a
message rendered once (``services.message_store.message_json``, with ``UUID`` and ``datetime``
values left for C code to format) reads the same everywhere. ``default=str`` covers asyncpg's own
UUID type, which orjson does not know.
"""

from typing import Any

import orjson

_OPTIONS = orjson.OPT_UTC_Z


def dumps(value: Any) -> bytes:
    """``value`` as JSON bytes."""
    return orjson.dumps(value, default=str, option=_OPTIONS)
