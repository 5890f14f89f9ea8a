"""Callback task: one signed delivery attempt per run, retried with backoff by RQ."""

from typing import Any

from conversation_service.queue.consumer import run_sync
from conversation_service.services import processing as processing


def deliver_callback(job_id: str) -> dict[str, Any]:
    """RQ entry point of ``deliver_callback``."""
    return run_sync(job_id, processing.deliver_callback)
