"""The WebSocket tests (ordered replies, resume without gap or duplicate, snapshots after a
trimmed log, typing, slow clients) in cluster mode: live events over sharded pub/sub."""

from tests.websocket.test_client_ws import *  # noqa: F403
