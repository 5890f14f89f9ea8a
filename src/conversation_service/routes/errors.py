"""The one place errors become RFC 9457 ``application/problem+json`` responses."""

import logging
import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from redis.exceptions import RedisError
from sqlalchemy.exc import DBAPIError, IntegrityError, InterfaceError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from conversation_service.errors import (
    PROBLEM_BASE,
    BadRequestError,
    ConflictError,
    MalformedJSONError,
    MethodNotAllowedError,
    NotFoundError,
    ServiceError,
    ServiceUnavailableError,
    UnauthorizedError,
    ValidationError,
)

log = logging.getLogger("conversation_service.errors")
PROBLEM_JSON = "application/problem+json"

_STATUS_ERRORS: dict[int, type[ServiceError]] = {
    400: BadRequestError,
    401: UnauthorizedError,
    404: NotFoundError,
    405: MethodNotAllowedError,
    422: ValidationError,
}


class ProblemResponse(Response):
    """A problem+json body serialised with orjson."""

    media_type = PROBLEM_JSON

    def render(self, content: Any) -> bytes:
        import orjson

        return orjson.dumps(content)


def problem_response(error: ServiceError, instance: str) -> ProblemResponse:
    """Render a domain error as problem details."""
    body: dict[str, Any] = {
        "type": error.type_uri,
        "title": error.title,
        "status": error.status,
        "detail": error.detail,
        "instance": instance,
        **error.extra,
    }
    return ProblemResponse(body, status_code=error.status, headers=error.headers)


def problem_for(exc: Exception, instance: str) -> ProblemResponse:
    """Problem details for any exception a handler lets escape."""
    if isinstance(exc, ServiceError):
        return problem_response(exc, instance)
    if isinstance(exc, IntegrityError):
        # A constraint caught a race the service could not see (e.g. two replicas); the
        # transaction was rolled back, so the client may retry.
        log.warning("integrity conflict", extra={"path": instance, "error": str(exc)[:200]})
        return problem_response(ConflictError("conflicting concurrent change; retry"), instance)
    if isinstance(exc, DBAPIError) and (
        exc.connection_invalidated or isinstance(exc, OperationalError | InterfaceError)
    ):
        # A lost connection (server restart, pg_terminate_backend, failover) or a busy database
        # is worth a retry: 503, and the pool replaces the connection. Anything else is a bug.
        log.warning("database unavailable", extra={"path": instance, "error": str(exc)[:200]})
        error = ServiceUnavailableError(
            "the database is unavailable; retry", headers={"Retry-After": "1"}
        )
        return problem_response(error, instance)
    if isinstance(exc, RedisError):
        # Redis unreachable or failing over (a cluster promotes a replica within seconds): what
        # needs it (deltas) is worth a retry, and a refused delta changed nothing.
        log.warning("redis unavailable", extra={"path": instance, "error": str(exc)[:200]})
        error = ServiceUnavailableError(
            "the realtime store is unavailable; retry", headers={"Retry-After": "1"}
        )
        return problem_response(error, instance)
    log.error("unhandled error", extra={"path": instance}, exc_info=exc)
    return problem_response(ServiceError("internal error"), instance)


def _validation_problem(exc: RequestValidationError, instance: str) -> ProblemResponse:
    errors = exc.errors()
    if any(err.get("type") == "json_invalid" for err in errors):
        return problem_response(MalformedJSONError("the request body is not valid JSON"), instance)
    fields = [
        {
            "loc": [str(part) for part in err.get("loc", ())],
            "msg": str(err.get("msg", "")),
            "type": str(err.get("type", "")),
        }
        for err in errors
    ]
    detail = "; ".join(f"{'.'.join(f['loc'])}: {f['msg']}" for f in fields[:5])
    return problem_response(ValidationError(detail, extra={"errors": fields}), instance)


def _allowed_methods(request: Request) -> list[str]:
    """The methods the OpenAPI document lists for the request's path template."""
    app = request.app
    table: list[tuple[re.Pattern[str], list[str]]] | None = getattr(app.state, "allow_table", None)
    if table is None:
        table = []
        for template, operations in app.openapi().get("paths", {}).items():
            source = re.sub(r"\\{[^/]+?\\}", "[^/]+", re.escape(template))
            table.append((re.compile(f"^{source}$"), sorted(m.upper() for m in operations)))
        app.state.allow_table = table
    for compiled, methods in table:
        if compiled.match(request.url.path):
            return methods
    return []


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers that turn every failure into problem details."""

    async def on_service_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ServiceError)
        return problem_response(exc, request.url.path)

    async def on_validation_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        return _validation_problem(exc, request.url.path)

    async def on_http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        error_type = _STATUS_ERRORS.get(exc.status_code, ServiceError)
        error = error_type(str(exc.detail) if exc.detail else None)
        response = problem_response(error, request.url.path)
        response.status_code = exc.status_code
        if exc.headers:
            response.headers.update(exc.headers)
        if exc.status_code == 405:
            # The router names the first route that matched the path; list every method the
            # path supports, as RFC 9110 asks of Allow.
            response.headers["Allow"] = ", ".join(_allowed_methods(request))
        return response

    async def on_other_error(request: Request, exc: Exception) -> Response:
        return problem_for(exc, request.url.path)

    app.add_exception_handler(ServiceError, on_service_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(IntegrityError, on_other_error)
    app.add_exception_handler(DBAPIError, on_other_error)
    app.add_exception_handler(RedisError, on_other_error)
    app.add_exception_handler(Exception, on_other_error)


PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["type", "title", "status"],
    "properties": {
        "type": {"type": "string", "format": "uri", "examples": [PROBLEM_BASE + "not-found"]},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "instance": {"type": "string"},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "loc": {"type": "array", "items": {"type": "string"}},
                    "msg": {"type": "string"},
                    "type": {"type": "string"},
                },
            },
        },
    },
}


def problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries for the given error statuses (problem+json)."""
    descriptions = {
        400: "Malformed request",
        401: "Missing or invalid credentials",
        404: "Not found (or not yours)",
        409: "Conflict",
        413: "Body too large",
        415: "Body is not JSON",
        422: "Validation failed",
        429: "Rate limit exceeded (see Retry-After and RateLimit-* headers)",
        503: "A dependency is unavailable",
    }
    return {
        status: {
            "description": descriptions.get(status, "Error"),
            "content": {PROBLEM_JSON: {"schema": PROBLEM_SCHEMA}},
        }
        for status in statuses
    }
