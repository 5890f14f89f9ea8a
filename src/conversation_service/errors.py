"""The one domain error hierarchy. Services raise these; one handler renders problem+json.

Every error has a stable ``type`` URI (the contract clients match on), a status and a title.
"""

from typing import Any, ClassVar

PROBLEM_BASE = "https://conversation-service.dev/problems/"


class ServiceError(Exception):
    """Base of every error the API renders as RFC 9457 problem details."""

    status: ClassVar[int] = 500
    code: ClassVar[str] = "internal-error"
    title: ClassVar[str] = "Internal server error"

    def __init__(
        self,
        detail: str | None = None,
        *,
        extra: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail or self.title)
        self.detail = detail or self.title
        self.extra = extra or {}
        self.headers = headers or {}

    @property
    def type_uri(self) -> str:
        """The stable problem ``type``."""
        return PROBLEM_BASE + self.code


class BadRequestError(ServiceError):
    """The request is malformed (not JSON, not UTF-8, bad cursor)."""

    status = 400
    code = "bad-request"
    title = "Bad request"


class MalformedJSONError(BadRequestError):
    """The body is not valid UTF-8 JSON."""

    code = "malformed-json"
    title = "Malformed JSON body"


class InvalidCursorError(BadRequestError):
    """A pagination cursor was not issued by this service or was tampered with."""

    code = "invalid-cursor"
    title = "Invalid pagination cursor"


class UnauthorizedError(ServiceError):
    """No valid credentials."""

    status = 401
    code = "unauthorized"
    title = "Authentication required"

    def __init__(self, detail: str | None = None) -> None:
        super().__init__(
            detail, headers={"WWW-Authenticate": 'Bearer realm="conversation-service"'}
        )


class NotFoundError(ServiceError):
    """The resource does not exist, or belongs to someone else (never 403: no existence leak)."""

    status = 404
    code = "not-found"
    title = "Not found"


class ConversationNotFoundError(NotFoundError):
    """Unknown conversation for this user."""

    code = "conversation-not-found"
    title = "Conversation not found"


class MessageNotFoundError(NotFoundError):
    """Unknown message in this conversation."""

    code = "message-not-found"
    title = "Message not found"


class MethodNotAllowedError(ServiceError):
    """The route exists but not with this method."""

    status = 405
    code = "method-not-allowed"
    title = "Method not allowed"


class ConflictError(ServiceError):
    """The request conflicts with the current state."""

    status = 409
    code = "conflict"
    title = "Conflict"


class IdempotencyInFlightError(ConflictError):
    """A request with the same Idempotency-Key is still being processed."""

    code = "idempotency-key-in-flight"
    title = "A request with this Idempotency-Key is in progress"


class ConversationNotWritableError(ConflictError):
    """The conversation is archived or closed and takes no new messages."""

    code = "conversation-not-writable"
    title = "Conversation does not accept messages"


class MessageNotStreamingError(ConflictError):
    """Deltas, completion or failure for a message that is not (or no longer) streaming."""

    code = "message-not-streaming"
    title = "Message is not streaming"


class PayloadTooLargeError(ServiceError):
    """The request body is over the configured limit."""

    status = 413
    code = "payload-too-large"
    title = "Request body too large"


class UnsupportedMediaTypeError(ServiceError):
    """The body is not ``application/json``."""

    status = 415
    code = "unsupported-media-type"
    title = "Unsupported media type"


class ValidationError(ServiceError):
    """The request is well-formed JSON but its values are not acceptable."""

    status = 422
    code = "validation-error"
    title = "Validation failed"


class IdempotencyKeyReusedError(ValidationError):
    """The Idempotency-Key was already used with a different request body."""

    code = "idempotency-key-reused"
    title = "Idempotency-Key reused with a different request"


class ServiceUnavailableError(ServiceError):
    """A dependency is down."""

    status = 503
    code = "service-unavailable"
    title = "Service unavailable"


class PreconditionFailedError(ServiceError):
    """``If-Match`` named a version that is no longer current."""

    status = 412
    code = "precondition-failed"
    title = "Version is no longer current"


class SessionNotFoundError(NotFoundError):
    """No such session, or no active session."""

    code = "session-not-found"
    title = "Session not found"


class SummaryNotFoundError(NotFoundError):
    """The conversation has no summary yet."""

    code = "summary-not-found"
    title = "No summary yet"


class UnknownMessageReferenceError(ValidationError):
    """A body ``parent_id``/``message_id`` (or ``?leaf=``) is not a live message of this
    conversation: another conversation's, unknown or deleted."""

    code = "unknown-message-reference"
    title = "Not a message of this conversation"
