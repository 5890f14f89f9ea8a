"""Problem details (RFC 9457) raised as typed exceptions.

Every error the service answers is ``application/problem+json`` with a stable ``type`` URI;
the exception class follows the HTTP status, and ``code`` (the last segment of ``type``, e.g.
``conversation-not-found``) tells the cases of one status apart.
"""

from typing import Any

import httpx


class ConversationServiceError(Exception):
    """Base of every error this client raises."""


class ProblemError(ConversationServiceError):
    """The service refused a request; ``problem`` is the whole problem document."""

    def __init__(self, status: int, problem: dict[str, Any], headers: httpx.Headers) -> None:
        self.status = status
        self.problem = problem
        self.headers = headers
        self.type: str = str(problem.get("type") or "about:blank")
        self.title: str = str(problem.get("title") or "")
        self.detail: str = str(problem.get("detail") or self.title)
        super().__init__(f"{status} {self.code}: {self.detail}")

    @property
    def code(self) -> str:
        """The problem type's last segment (``about:blank`` when the service gave none)."""
        return self.type.rstrip("/").rsplit("/", 1)[-1]

    @property
    def retry_after(self) -> float | None:
        """Seconds the service asked to wait (``Retry-After``), if it said."""
        value = self.headers.get("Retry-After")
        try:
            return float(value) if value is not None else None
        except ValueError:
            return None


class BadRequestError(ProblemError):
    """400."""


class UnauthorizedError(ProblemError):
    """401: missing or invalid credentials."""


class ForbiddenError(ProblemError):
    """403."""


class NotFoundError(ProblemError):
    """404: absent, or not readable by this caller (the service does not tell them apart)."""


class ConflictError(ProblemError):
    """409: e.g. ``idempotency-key-in-flight``, ``conversation-not-writable``."""


class PreconditionFailedError(ProblemError):
    """412."""


class PayloadTooLargeError(ProblemError):
    """413."""


class ValidationError(ProblemError):
    """422: the request body or parameters are invalid (``problem["errors"]`` says where)."""


class RateLimitedError(ProblemError):
    """429: wait ``retry_after`` seconds."""


class ServerError(ProblemError):
    """5xx."""


class ServiceUnavailableError(ServerError):
    """503: a dependency of the service is down; retry later."""


class StreamError(ConversationServiceError):
    """A realtime stream failed for good (e.g. its credentials were refused)."""


_BY_STATUS: dict[int, type[ProblemError]] = {
    400: BadRequestError,
    401: UnauthorizedError,
    403: ForbiddenError,
    404: NotFoundError,
    409: ConflictError,
    412: PreconditionFailedError,
    413: PayloadTooLargeError,
    422: ValidationError,
    429: RateLimitedError,
    503: ServiceUnavailableError,
}


def problem_error(response: httpx.Response) -> ProblemError:
    """The typed exception for an error response (any body, problem+json or not)."""
    try:
        body: Any = response.json()
    except ValueError:
        body = None
    problem = body if isinstance(body, dict) else {"detail": response.text[:2000]}
    problem.setdefault("status", response.status_code)
    status = response.status_code
    kind = _BY_STATUS.get(status) or (ServerError if status >= 500 else ProblemError)
    return kind(status, problem, response.headers)
