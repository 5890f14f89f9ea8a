"""Settings of the reference orchestrator, read from ``ORCHESTRATOR_*`` variables."""

from typing import Self

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from conversation_service.config.settings import DEV_INTERNAL_API_KEY, DEV_WEBHOOK_SECRET


class OrchestratorSettings(BaseSettings):
    """Where the service is, how to authenticate to it, and how fast to "type"."""

    model_config = SettingsConfigDict(
        env_prefix="ORCHESTRATOR_", env_file=".env", extra="ignore", frozen=True
    )

    # Base URL of the Conversation Service (its internal API is under /internal/v1).
    service_url: str = "http://127.0.0.1:8000"
    # The service key the service accepts (CONVERSATION_INTERNAL_API_KEYS); dev default.
    service_key: SecretStr = SecretStr(DEV_INTERNAL_API_KEY)
    # The service's Standard Webhooks secret (CONVERSATION_WEBHOOK_SECRET); dev default.
    webhook_secret: SecretStr = SecretStr(DEV_WEBHOOK_SECRET)
    # Pause before each token, drawn uniformly from this range (realistic pacing).
    token_delay_min_ms: int = Field(default=20, ge=0, le=5_000)
    token_delay_max_ms: int = Field(default=40, ge=0, le=5_000)
    request_timeout_seconds: float = Field(default=5.0, gt=0, le=60)
    # A reply that has not finished after this long is failed (and the message marked failed).
    reply_timeout_seconds: float = Field(default=120.0, gt=0)

    @model_validator(mode="after")
    def _ordered_delays(self) -> Self:
        if self.token_delay_max_ms < self.token_delay_min_ms:
            raise ValueError("ORCHESTRATOR_TOKEN_DELAY_MAX_MS must be >= ..._MIN_MS")
        return self
