"""Service settings read from the environment (prefix ``CONVERSATION_``).

Unsafe values are refused at start-up outside development: a missing or placeholder JWT secret,
no internal API keys, or an embedded database/Redis in production stop the process with a message
saying which variable to set.
"""

from enum import StrEnum
from pathlib import Path
from typing import Annotated, Self

from limits import parse_many
from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from conversation_service.config import constants

# Well known, so refused outside development; 32+ characters like any HS256 secret (PyJWT warns
# InsecureKeyLengthWarning on every token signed with less).
DEV_JWT_SECRET = "conversation-service-development-jwt-secret"  # noqa: S105 - refused outside development
PLACEHOLDER_SECRETS = frozenset(
    {"", "changeme", "change-me", "secret", "dev-secret", "development", DEV_JWT_SECRET}
)
DEV_INTERNAL_API_KEY = "dev-internal-key"
# base64 of "conversation-service-dev-webhook" (32 bytes); refused outside development.
DEV_WEBHOOK_SECRET = "whsec_Y29udmVyc2F0aW9uLXNlcnZpY2UtZGV2LXdlYmhvb2s="  # noqa: S105 - refused in production


class RedisMode(StrEnum):
    """How ``CONVERSATION_REDIS_URL`` is reached: one server, or any node of a cluster."""

    STANDALONE = "standalone"
    CLUSTER = "cluster"


class Environment(StrEnum):
    """Where the service runs; production turns on every safety check."""

    DEVELOPMENT = "development"
    TEST = "test"
    PRODUCTION = "production"


def default_database_url() -> str:
    """SQLite file under ``.data/`` in the working directory (the embedded default)."""
    return f"sqlite+aiosqlite:///{Path('.data') / 'conversations.db'}"


class ConversationSettings(BaseSettings):
    """Every tunable of the service; env variables are the field names upper-cased."""

    model_config = SettingsConfigDict(
        env_prefix="CONVERSATION_", env_file=".env", extra="ignore", frozen=True
    )

    environment: Environment = Environment.DEVELOPMENT
    database_url: str = Field(default_factory=default_database_url)
    # None means "the embedded Valkey server" that serve/worker start on embedded_redis_port.
    redis_url: str | None = None
    embedded_redis_port: int = Field(default=constants.EMBEDDED_REDIS_PORT, ge=1, le=65535)
    # ``cluster``: redis_url names any node of a Redis Cluster; the client discovers the rest.
    redis_mode: RedisMode = RedisMode.STANDALONE
    # RQ's Redis (one server, never a cluster); None means redis_url (standalone mode only).
    queue_redis_url: str | None = None
    jwt_secret: SecretStr | None = None
    jwt_public_key: SecretStr | None = None
    jwt_audience: str | None = None
    jwt_issuer: str | None = None
    jwt_leeway_seconds: int = Field(default=30, ge=0, le=300)
    internal_api_keys: Annotated[tuple[SecretStr, ...], NoDecode] = ()
    max_body_bytes: int = Field(default=constants.MAX_REQUEST_BODY_BYTES, ge=1024)
    # An import body is a whole export (NDJSON), read into memory before it is parsed.
    import_max_bytes: int = Field(default=64 * 1_048_576, ge=1024)
    db_pool_size: int = Field(default=10, ge=1, le=200)
    # A streaming replica of database_url (PostgreSQL) that serves the API's reads; a client that
    # wrote is still shown its write (the Conversation-Read-After position, docs/ARCHITECTURE.md).
    database_read_url: str | None = None
    # How often each process asks the replica how far it has replayed (and whether it is up).
    database_read_check_seconds: float = Field(default=0.5, gt=0, le=3600)
    log_level: str = "INFO"
    log_json: bool = True
    # One structured line per request; off by default because it costs a third of throughput.
    access_log: bool = False
    # A streaming message with no delta for this long is marked incomplete (partial content kept).
    stream_idle_timeout: float = Field(default=120.0, gt=0)

    # Background work (RQ) and the transactional outbox.
    job_max_attempts: int = Field(default=3, ge=1, le=20)
    job_retry_intervals: Annotated[tuple[int, ...], NoDecode] = (2, 10, 60)
    job_timeout_seconds: int = Field(default=300, ge=1)
    # A started job whose worker stops renewing this lease is run again by the sweep.
    job_lease_seconds: int = Field(default=60, ge=1)
    # Off only for tests that run several apps against one database with different Redis.
    outbox_sweep_enabled: bool = True
    outbox_sweep_interval: float = Field(default=5.0, gt=0)
    # Rows younger than this are left to the after-commit relay before the sweep takes them.
    outbox_grace_seconds: float = Field(default=5.0, ge=0)
    summary_trigger_tokens: int = Field(default=1000, ge=1)
    summarizer: str = Field(default="extractive", pattern="^(extractive|llm)$")
    summary_llm_url: str | None = None
    summary_llm_model: str = "gpt-4o-mini"
    summary_llm_api_key: SecretStr | None = None

    # Signed callbacks to the orchestrator (Standard Webhooks).
    orchestrator_callback_url: str | None = None
    webhook_secret: SecretStr | None = None
    callback_allowed_hosts: Annotated[tuple[str, ...], NoDecode] = ()
    callback_timeout_seconds: float = Field(default=5.0, gt=0, le=60)
    callback_max_attempts: int = Field(default=8, ge=1, le=30)
    callback_retry_intervals: Annotated[tuple[int, ...], NoDecode] = (
        1,
        5,
        30,
        120,
        600,
        1800,
        3600,
    )
    # Agent validation (Agent Management goes through the orchestrator): when set, creating a
    # conversation asks GET {orchestrator_url}/agents/{agent_id} (see services.agents).
    orchestrator_url: str | None = None
    # True: no conversation without a validated agent (503 while the orchestrator is down);
    # false: an orchestrator outage lets conversations through (a warning is logged).
    agent_validation_required: bool = False
    agent_validation_timeout_seconds: float = Field(default=1.0, gt=0, le=30)
    # The chat page at / and its static files; None: on in development only.
    chat_page_enabled: bool | None = None

    # OpenAI Conversations API compatibility: where it is mounted, and the agent_id given to the
    # conversations it creates (the OpenAI API has no notion of an agent).
    openai_prefix: str = Field(default="/v1", pattern=r"^(/[A-Za-z0-9._~-]+)+$")
    openai_default_agent_id: str = Field(default="default", min_length=1, max_length=128)

    # Rate limits and quotas, in the `limits` notation ("60/minute", "10/second;600/hour"), kept
    # in Redis so they hold across replicas (see services.rate_limits). Redis unreachable: the
    # limiter fails open and readiness says so.
    rate_limit_enabled: bool = True
    rate_limit_messages: str = "60/minute"  # per user: message appends
    rate_limit_requests: str = "600/minute"  # per user: every public request
    rate_limit_tenant: str = "6000/minute"  # per tenant: every public request
    rate_limit_internal: str = "60000/minute"  # per orchestrator service key
    rate_limit_ws_connections: int = Field(default=20, ge=1)  # concurrent WebSockets per user
    rate_limit_strategy: str = Field(
        default="fixed-window", pattern="^(fixed-window|sliding-window-counter|moving-window)$"
    )
    # A check Redis has not answered in this many seconds fails open: a slow Redis must not slow
    # every request.
    rate_limit_check_timeout: float = Field(default=0.5, gt=0, le=10)

    # Data lifecycle (services.lifecycle): None turns a rule off.
    retention_archive_after_days: int | None = Field(default=None, ge=1)
    retention_purge_after_days: int | None = Field(default=None, ge=1)
    retention_interval_seconds: float = Field(default=3600.0, gt=0)

    # Operations (README "Telemetry and metrics"): the RQ queues are named
    # ``{queue_prefix}-high|default|low`` (empty: the bare names of earlier releases), and a
    # ``conversation-service worker`` serves its Prometheus metrics on worker_metrics_port (a pool
    # on consecutive ports, one a process). Traces are configured by the standard OTEL_* variables.
    queue_prefix: str = Field(default="conversation", max_length=64, pattern=r"^[A-Za-z0-9_.:-]*$")
    worker_metrics_port: int | None = Field(default=None, ge=1, le=65535)

    @field_validator(
        "rate_limit_messages",
        "rate_limit_requests",
        "rate_limit_tenant",
        "rate_limit_internal",
    )
    @classmethod
    def _limits_notation(cls, value: str) -> str:
        try:
            items = parse_many(value)
        except ValueError as exc:
            raise ValueError(f"{value!r} is not in the limits notation, e.g. 60/minute") from exc
        if any(item.amount < 1 for item in items):
            raise ValueError("a limit must allow at least 1; set rate_limit_enabled=false instead")
        return value

    @field_validator(
        "internal_api_keys",
        "callback_allowed_hosts",
        "job_retry_intervals",
        "callback_retry_intervals",
        mode="before",
    )
    @classmethod
    def _split_commas(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @model_validator(mode="after")
    def _require_queue_redis_in_cluster_mode(self) -> Self:
        # Checked in every environment: a cluster without a queue Redis cannot run jobs at all.
        if self.redis_mode is RedisMode.CLUSTER:
            missing = [
                name
                for name, value in (
                    ("CONVERSATION_REDIS_URL", self.redis_url),
                    ("CONVERSATION_QUEUE_REDIS_URL", self.queue_redis_url),
                )
                if not value
            ]
            if missing:
                raise ValueError(
                    "CONVERSATION_REDIS_MODE=cluster needs "
                    + " and ".join(missing)
                    + " (CONVERSATION_REDIS_URL names any cluster node; RQ needs one "
                    "non-cluster Redis at CONVERSATION_QUEUE_REDIS_URL)"
                )
        return self

    @model_validator(mode="after")
    def _read_url_needs_postgres(self) -> Self:
        if self.database_read_url and (
            self.is_sqlite or not self.database_read_url.startswith("postgresql")
        ):
            raise ValueError(
                "CONVERSATION_DATABASE_READ_URL names a PostgreSQL streaming replica of a "
                "PostgreSQL CONVERSATION_DATABASE_URL"
            )
        return self

    @model_validator(mode="after")
    def _refuse_unsafe_production_values(self) -> Self:
        if self.environment is Environment.DEVELOPMENT:
            return self
        problems: list[str] = []
        has_public_key = self.jwt_public_key is not None and self.jwt_public_key.get_secret_value()
        secret = self.jwt_secret.get_secret_value() if self.jwt_secret else ""
        if not has_public_key and secret.lower() in PLACEHOLDER_SECRETS:
            problems.append(
                "set CONVERSATION_JWT_SECRET to a real secret (32+ random bytes) "
                "or CONVERSATION_JWT_PUBLIC_KEY to an RS256 public key"
            )
        elif not has_public_key and len(secret) < 32:
            problems.append("CONVERSATION_JWT_SECRET must be at least 32 characters")
        keys = [key.get_secret_value() for key in self.internal_api_keys]
        if not keys or any(
            key.lower() in PLACEHOLDER_SECRETS or key == DEV_INTERNAL_API_KEY for key in keys
        ):
            problems.append("set CONVERSATION_INTERNAL_API_KEYS to real service keys")
        webhook = self.webhook_secret.get_secret_value() if self.webhook_secret else ""
        # The test environment may sign with the development secret; production never does.
        if self.environment is Environment.PRODUCTION and (
            webhook.lower() in PLACEHOLDER_SECRETS or webhook == DEV_WEBHOOK_SECRET
        ):
            problems.append("set CONVERSATION_WEBHOOK_SECRET (Standard Webhooks whsec_… secret)")
        if self.environment is Environment.PRODUCTION and self.redis_url is None:
            problems.append("set CONVERSATION_REDIS_URL (no embedded Redis in production)")
        if problems:
            raise ValueError(
                f"unsafe configuration for environment {self.environment.value}: "
                + "; ".join(problems)
            )
        return self

    @property
    def is_sqlite(self) -> bool:
        """True when the database is the embedded SQLite file."""
        return self.database_url.startswith("sqlite")

    def effective_jwt_secret(self) -> str | None:
        """The HS256 secret; development falls back to a fixed, well-known one."""
        if self.jwt_secret is not None and self.jwt_secret.get_secret_value():
            return self.jwt_secret.get_secret_value()
        if self.jwt_public_key is None and self.environment is Environment.DEVELOPMENT:
            return DEV_JWT_SECRET
        return None

    def effective_internal_keys(self) -> frozenset[str]:
        """Accepted orchestrator keys; development accepts a fixed, well-known one."""
        keys = frozenset(key.get_secret_value() for key in self.internal_api_keys)
        if not keys and self.environment is Environment.DEVELOPMENT:
            return frozenset({DEV_INTERNAL_API_KEY})
        return keys

    def effective_webhook_secret(self) -> str:
        """The Standard Webhooks signing secret; development falls back to a fixed one."""
        if self.webhook_secret is not None and self.webhook_secret.get_secret_value():
            return self.webhook_secret.get_secret_value()
        return DEV_WEBHOOK_SECRET

    def effective_chat_page_enabled(self) -> bool:
        """Whether ``/`` serves the chat page (default: only in development)."""
        if self.chat_page_enabled is not None:
            return self.chat_page_enabled
        return self.environment is Environment.DEVELOPMENT

    def effective_redis_url(self) -> str:
        """The Redis URL, or the embedded server's address when none is configured."""
        return self.redis_url or f"redis://127.0.0.1:{self.embedded_redis_port}/0"

    @property
    def redis_cluster(self) -> bool:
        """True when the realtime and hot-state plane runs on a Redis Cluster."""
        return self.redis_mode is RedisMode.CLUSTER

    def effective_queue_redis_url(self) -> str:
        """RQ's Redis: CONVERSATION_QUEUE_REDIS_URL, else the (standalone) Redis URL."""
        return self.queue_redis_url or self.effective_redis_url()
