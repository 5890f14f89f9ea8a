"""Summary task: incremental, non-destructive summaries."""

from typing import Any

from conversation_service.queue.consumer import run_sync
from conversation_service.services import processing as processing


def generate_summary(job_id: str) -> dict[str, Any]:
    """RQ entry point of ``generate_summary`` (one at a time per conversation)."""
    return run_sync(job_id, processing.generate_summary)
