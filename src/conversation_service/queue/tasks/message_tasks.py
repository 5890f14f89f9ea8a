"""Message tasks: processing (tokens, language, metadata) and sentiment."""

from typing import Any

from conversation_service.queue.consumer import run_sync
from conversation_service.services import processing as processing


def process_message(job_id: str) -> dict[str, Any]:
    """RQ entry point of ``process_message`` (queue ``high`` for user messages)."""
    return run_sync(job_id, processing.process_message)


def analyze_sentiment(job_id: str) -> dict[str, Any]:
    """RQ entry point of ``analyze_sentiment``."""
    return run_sync(job_id, processing.analyze_sentiment)
