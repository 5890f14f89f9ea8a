"""Fan-out across API replicas (real ``conversation-service serve`` processes) in cluster mode:
viewers on every replica get every delta in one order over sharded pub/sub; a client resumes
after its process restarts; the idle sweep ends a stream once."""

from tests.test_replicas import *  # noqa: F403
