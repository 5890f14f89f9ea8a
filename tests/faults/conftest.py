"""Fault tests, like the security battery, leave no pending jobs for the queue tests."""

from tests.security.conftest import no_leftover_jobs

__all__ = ["no_leftover_jobs"]
