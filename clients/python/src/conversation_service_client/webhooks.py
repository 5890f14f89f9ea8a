"""``verify_callback``: check a callback's Standard Webhooks signature before trusting it."""

from collections.abc import Mapping
from typing import Any

from standardwebhooks import Webhook, WebhookVerificationError

from conversation_service_client.errors import ConversationServiceError


class InvalidCallbackError(ConversationServiceError):
    """The callback's signature, timestamp or headers do not check out: answer it 401."""


def verify_callback(headers: Mapping[str, str], body: bytes | str, secret: str) -> dict[str, Any]:
    """The callback's JSON payload once ``webhook-id``, ``webhook-timestamp`` and
    ``webhook-signature`` prove it was signed with ``secret`` (``whsec_…``) within the last
    five minutes; raises ``InvalidCallbackError`` otherwise.

    ``body`` must be the raw bytes received, before any JSON parsing. ``webhook-id`` is the
    same on every retry of one callback: keep the ones seen to drop repeats.
    """
    lowered = {key.lower(): value for key, value in headers.items()}
    raw = body.decode() if isinstance(body, bytes) else body
    try:
        payload: Any = Webhook(secret).verify(raw, lowered)
    except (WebhookVerificationError, ValueError, KeyError) as exc:
        raise InvalidCallbackError(str(exc) or type(exc).__name__) from exc
    if not isinstance(payload, dict):
        raise InvalidCallbackError("the payload is not a JSON object")
    return payload


__all__ = ["InvalidCallbackError", "verify_callback"]
