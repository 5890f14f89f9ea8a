"""The session tests (activity, gaps, the hot context copy in Redis) in cluster mode."""

from tests.routes.test_sessions import *  # noqa: F403
