"""Python client of the Conversation Service.

``ConversationServiceClient`` (blocking) and ``AsyncConversationServiceClient`` cover the public
API (a user's JWT) and the orchestrator's internal API (a service key); ``models`` holds the
typed models generated from the service's OpenAPI document; errors are ``ProblemError``
subclasses; ``verify_callback`` checks a signed callback. The LangChain history is
``conversation_service_client.langchain`` (extra ``langchain``).
"""

from conversation_service_client import models
from conversation_service_client._base import RetryPolicy
from conversation_service_client._calls import Page
from conversation_service_client.aio import AsyncConversationServiceClient
from conversation_service_client.errors import (
    BadRequestError,
    ConflictError,
    ConversationServiceError,
    ForbiddenError,
    NotFoundError,
    PayloadTooLargeError,
    PreconditionFailedError,
    ProblemError,
    RateLimitedError,
    ServerError,
    ServiceUnavailableError,
    StreamError,
    UnauthorizedError,
    ValidationError,
)
from conversation_service_client.streaming import Event
from conversation_service_client.sync import ConversationServiceClient
from conversation_service_client.webhooks import InvalidCallbackError, verify_callback

__all__ = [
    "AsyncConversationServiceClient",
    "BadRequestError",
    "ConflictError",
    "ConversationServiceClient",
    "ConversationServiceError",
    "Event",
    "ForbiddenError",
    "InvalidCallbackError",
    "NotFoundError",
    "Page",
    "PayloadTooLargeError",
    "PreconditionFailedError",
    "ProblemError",
    "RateLimitedError",
    "RetryPolicy",
    "ServerError",
    "ServiceUnavailableError",
    "StreamError",
    "UnauthorizedError",
    "ValidationError",
    "models",
    "verify_callback",
]
