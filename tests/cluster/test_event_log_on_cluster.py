"""The event log tests (concurrent publishers get increasing ids in stream order) in cluster
mode."""

from tests.websocket.test_event_log import (  # noqa: F401
    redis,
    test_concurrent_publishers_get_increasing_ids_in_stream_order,
    test_public_routes_publish_their_changes_after_commit,
)
