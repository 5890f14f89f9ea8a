"""Fixed limits and time-to-live values shared by the whole service.

Limits that operators tune live in settings; these are the contract-level bounds that the API
schema documents (and that clients can rely on), so they change only with a release.
"""

from typing import Final

# Request and payload limits.
MAX_REQUEST_BODY_BYTES: Final = 1_048_576  # default for settings.max_body_bytes
MAX_MESSAGE_CHARS: Final = 100_000
MAX_METADATA_BYTES: Final = 16_384
MAX_METADATA_KEYS: Final = 64
MAX_METADATA_KEY_CHARS: Final = 64
MAX_TAGS: Final = 32
MAX_TAG_CHARS: Final = 64
MAX_TITLE_CHARS: Final = 500
MAX_CONTENT_PARTS: Final = 64
MAX_ID_CHARS: Final = 128
MAX_IDEMPOTENCY_KEY_CHARS: Final = 255
MAX_JSON_DEPTH: Final = 16
# Integers free-form JSON may hold: what the JSON encoder (orjson) writes.
MIN_JSON_INT: Final = -(2**63)
MAX_JSON_INT: Final = 2**64 - 1

# Largest seq a query may name (fits a signed 64-bit column on both backends).
MAX_SEQ: Final = 2**62

# Pagination.
DEFAULT_PAGE_SIZE: Final = 20
MAX_PAGE_SIZE: Final = 100

# Time-to-live values, in seconds.
SESSION_TTL: Final = 30 * 60
IDEMPOTENCY_KEY_TTL: Final = 24 * 60 * 60
# An in-flight idempotency claim older than this belongs to a crashed request and may be retaken.
IDEMPOTENCY_LOCK_TTL: Final = 60
READINESS_TIMEOUT: Final = 2.0

# Port of the embedded Valkey server the launcher starts when no Redis URL is configured.
EMBEDDED_REDIS_PORT: Final = 6399

# Opaque pagination cursors are refused past this length before they are decoded.
MAX_CURSOR_CHARS: Final = 512
