"""The agent streaming tests (deltas, completion, failure, idle sweep) in cluster mode."""

from tests.routes.test_streaming import *  # noqa: F403
