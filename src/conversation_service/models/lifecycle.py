"""Schemas of the data lifecycle: what a per-user erase removed."""

from pydantic import BaseModel, Field


class ErasureOut(BaseModel):
    """Counts of what was erased for one user of one tenant (all zero when nothing was left)."""

    conversations: int = Field(description="Conversations, soft-deleted ones included")
    messages: int
    sessions: int
    summaries: int
    tracked_context_versions: int
    api_keys: int = Field(description="API keys of the user, revoked and deleted")
    jobs_cancelled: int = Field(description="Queued or running jobs that will not run")
    callbacks_deleted: int = Field(description="Callback deliveries (and their attempts)")
