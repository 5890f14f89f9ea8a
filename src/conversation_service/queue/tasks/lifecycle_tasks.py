"""Lifecycle task: the scheduled retention run (archive inactive, purge expired)."""

from typing import Any

from conversation_service.queue.consumer import run_sync
from conversation_service.services import retention as retention_rules


def retention(job_id: str) -> dict[str, Any]:
    """RQ entry point of ``retention`` (queue ``low``, one per retention interval)."""
    return run_sync(job_id, retention_rules.retention)
