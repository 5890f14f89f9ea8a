"""Credential checks: user JWTs (HS256 or RS256) and orchestrator service keys."""

import hmac
import time
from dataclasses import dataclass

import jwt

from conversation_service.config.constants import MAX_ID_CHARS
from conversation_service.config.settings import ConversationSettings
from conversation_service.errors import UnauthorizedError

_CACHE_SIZE = 10_000
_CACHE_SECONDS = 60.0


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: a user (``sub``) inside a tenant."""

    tenant_id: str
    user_id: str


class TokenVerifier:
    """Verifies bearer JWTs with exactly one algorithm, chosen by configuration.

    Pinning the algorithm (instead of trusting the token header) is what refuses ``alg: none``
    and HS256 tokens forged with an RS256 public key as the secret.
    """

    def __init__(self, settings: ConversationSettings) -> None:
        public_key = settings.jwt_public_key.get_secret_value() if settings.jwt_public_key else ""
        if public_key:
            self._key: str = public_key
            self._algorithm = "RS256"
        else:
            secret = settings.effective_jwt_secret()
            if secret is None:
                raise ValueError("no JWT secret or public key configured")
            self._key = secret
            self._algorithm = "HS256"
        self._audience = settings.jwt_audience
        self._issuer = settings.jwt_issuer
        self._leeway = settings.jwt_leeway_seconds
        self._cache: dict[str, tuple[Principal, float]] = {}

    def verify(self, token: str) -> Principal:
        """Return the principal of a valid token or raise ``UnauthorizedError``.

        Verified tokens are remembered (bounded, never past their ``exp``): a client sends the
        same token on every request, and the signature check is the costliest step of auth.
        """
        cached = self._cache.get(token)
        if cached is not None and cached[1] > time.time():
            return cached[0]
        principal, expires = self._verify(token)
        if len(self._cache) >= _CACHE_SIZE:
            self._cache.clear()
        self._cache[token] = (principal, min(expires, time.time() + _CACHE_SECONDS))
        return principal

    def _verify(self, token: str) -> tuple[Principal, float]:
        try:
            claims = jwt.decode(
                token,
                self._key,
                algorithms=[self._algorithm],
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._leeway,
                options={
                    "require": ["exp", "sub", "tenant"],
                    "verify_aud": self._audience is not None,
                },
            )
        except jwt.ExpiredSignatureError as exc:
            raise UnauthorizedError("token expired") from exc
        except jwt.PyJWTError as exc:
            raise UnauthorizedError(f"invalid token: {exc}") from exc
        sub, tenant = claims.get("sub"), claims.get("tenant")
        if not _is_id(sub) or not _is_id(tenant):
            raise UnauthorizedError("token claims sub and tenant must be non-empty strings")
        assert isinstance(sub, str)
        assert isinstance(tenant, str)
        return Principal(tenant_id=tenant, user_id=sub), float(claims["exp"])


def _is_id(value: object) -> bool:
    return isinstance(value, str) and 0 < len(value) <= MAX_ID_CHARS


def issue_token(secret: str, *, tenant: str, user: str, ttl_seconds: int = 3600) -> str:
    """Mint an HS256 user token (development launcher, tests and benchmarks)."""
    now = int(time.time())
    payload = {"sub": user, "tenant": tenant, "iat": now, "exp": now + ttl_seconds}
    return jwt.encode(payload, secret, algorithm="HS256")


def verify_service_key(presented: str, accepted: frozenset[str]) -> None:
    """Accept an orchestrator key in constant time, or raise ``UnauthorizedError``."""
    matched = False
    for key in accepted:
        matched |= hmac.compare_digest(presented.encode(), key.encode())
    if not matched:
        raise UnauthorizedError("invalid service key")
