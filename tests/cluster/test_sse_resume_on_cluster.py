"""The SSE tests (ids, resume with ``Last-Event-ID`` and ``?after=``) in cluster mode."""

from tests.routes.test_events_sse import *  # noqa: F403
