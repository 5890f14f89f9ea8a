"""Opaque, signed pagination cursors.

A cursor is base64url(JSON payload) + "." + a truncated HMAC, so a client cannot forge a position;
a tampered or foreign cursor is refused instead of silently returning another page.
"""

import base64
import binascii
import hashlib
import hmac
from typing import Any

import orjson

_SIG_BYTES = 16


class CursorError(ValueError):
    """The cursor was not issued by this service."""


class CursorCodec:
    """Encodes and verifies cursors with one key."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    def encode(self, payload: dict[str, Any]) -> str:
        """Sign and encode a cursor payload."""
        body = base64.urlsafe_b64encode(orjson.dumps(payload)).rstrip(b"=")
        return (body + b"." + self._sign(body)).decode()

    def decode(self, cursor: str) -> dict[str, Any]:
        """Verify and decode a cursor, or raise ``CursorError``."""
        try:
            raw = cursor.encode("ascii")
            body, _, signature = raw.partition(b".")
            if not hmac.compare_digest(signature, self._sign(body)):
                raise CursorError("cursor signature does not match")
            payload = orjson.loads(base64.urlsafe_b64decode(body + b"=" * (-len(body) % 4)))
        except (UnicodeEncodeError, binascii.Error, orjson.JSONDecodeError) as exc:
            raise CursorError("cursor is not well-formed") from exc
        if not isinstance(payload, dict):
            raise CursorError("cursor is not well-formed")
        return payload

    def _sign(self, body: bytes) -> bytes:
        digest = hmac.new(self._key, body, hashlib.sha256).digest()[:_SIG_BYTES]
        return base64.urlsafe_b64encode(digest).rstrip(b"=")
