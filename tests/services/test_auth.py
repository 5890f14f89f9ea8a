"""Token verification: HS256 and RS256, expiry, forgery, ``alg: none`` and missing claims."""

import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from conversation_service.errors import UnauthorizedError
from conversation_service.services.auth import TokenVerifier, issue_token, verify_service_key
from tests.conftest import JWT_SECRET, make_settings


def hs_verifier() -> TokenVerifier:
    return TokenVerifier(make_settings("sqlite+aiosqlite:///x.db", "redis://x"))


def test_valid_hs256_token_gives_principal() -> None:
    principal = hs_verifier().verify(issue_token(JWT_SECRET, tenant="acme", user="ana"))
    assert (principal.tenant_id, principal.user_id) == ("acme", "ana")


@pytest.mark.parametrize(
    "token",
    [
        issue_token(JWT_SECRET, tenant="acme", user="ana", ttl_seconds=-120),  # expired
        issue_token("another-secret-" + "z" * 40, tenant="acme", user="ana"),  # forged
        jwt.encode({"sub": "ana", "tenant": "acme", "exp": int(time.time()) + 60}, None, "none"),
        jwt.encode({"sub": "ana", "exp": int(time.time()) + 60}, JWT_SECRET, "HS256"),
        jwt.encode({"tenant": "acme", "exp": int(time.time()) + 60}, JWT_SECRET, "HS256"),
        jwt.encode({"sub": "ana", "tenant": "acme"}, JWT_SECRET, "HS256"),  # no exp
        jwt.encode({"sub": "", "tenant": "acme", "exp": int(time.time()) + 60}, JWT_SECRET),
        jwt.encode({"sub": 5, "tenant": "acme", "exp": int(time.time()) + 60}, JWT_SECRET),
    ],
    ids=["expired", "forged", "alg-none", "no-tenant", "no-sub", "no-exp", "empty-sub", "int-sub"],
)
def test_bad_tokens_are_refused(token: str) -> None:
    with pytest.raises(UnauthorizedError):
        hs_verifier().verify(token)


def test_rs256_verifies_with_public_key_and_refuses_hs256_confusion() -> None:
    private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_pem = (
        private_key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    settings = make_settings(
        "sqlite+aiosqlite:///x.db", "redis://x", jwt_secret=None, jwt_public_key=public_pem
    )
    verifier = TokenVerifier(settings)
    claims = {"sub": "ana", "tenant": "acme", "exp": int(time.time()) + 60}
    assert verifier.verify(jwt.encode(claims, private_key, "RS256")).user_id == "ana"
    # With RS256 configured, an HS256 token (e.g. one signed with the public key as the
    # secret, the classic confusion attack) is refused because the algorithm is pinned.
    with pytest.raises(UnauthorizedError):
        verifier.verify(issue_token(JWT_SECRET, tenant="acme", user="ana"))


def test_service_key_compare() -> None:
    verify_service_key("k1", frozenset({"k0", "k1"}))
    with pytest.raises(UnauthorizedError):
        verify_service_key("k2", frozenset({"k0", "k1"}))
    with pytest.raises(UnauthorizedError):
        verify_service_key("k", frozenset())
