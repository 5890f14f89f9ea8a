"""Settings refuse unsafe values outside development and parse the environment."""

import warnings

import pytest

from conversation_service.config.settings import DEV_JWT_SECRET, ConversationSettings, Environment
from conversation_service.services.auth import TokenVerifier, issue_token

STRONG = "s" * 40


def test_development_defaults_work_without_any_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CONVERSATION_ENVIRONMENT", raising=False)
    settings = ConversationSettings(_env_file=None)  # type: ignore[call-arg]
    assert settings.environment is Environment.DEVELOPMENT
    assert settings.database_url.startswith("sqlite+aiosqlite:///")
    assert settings.effective_jwt_secret() == DEV_JWT_SECRET
    assert settings.effective_redis_url() == "redis://127.0.0.1:6399/0"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"internal_api_keys": "k" * 30, "redis_url": "redis://r"}, "CONVERSATION_JWT_SECRET"),
        (
            {"jwt_secret": "changeme", "internal_api_keys": "k" * 30, "redis_url": "redis://r"},
            "CONVERSATION_JWT_SECRET",
        ),
        (
            {"jwt_secret": "short", "internal_api_keys": "k" * 30, "redis_url": "redis://r"},
            "at least 32",
        ),
        ({"jwt_secret": STRONG, "redis_url": "redis://r"}, "CONVERSATION_INTERNAL_API_KEYS"),
        ({"jwt_secret": STRONG, "internal_api_keys": "k" * 30}, "CONVERSATION_REDIS_URL"),
        (
            {"jwt_secret": STRONG, "internal_api_keys": "k" * 30, "redis_url": "redis://r"},
            "CONVERSATION_WEBHOOK_SECRET",
        ),
    ],
)
def test_production_refuses_missing_or_placeholder_secrets(
    overrides: dict[str, str], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        ConversationSettings(environment=Environment.PRODUCTION, **overrides)  # type: ignore[arg-type]


def test_internal_keys_are_read_comma_separated_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONVERSATION_ENVIRONMENT", "production")
    monkeypatch.setenv("CONVERSATION_JWT_SECRET", STRONG)
    monkeypatch.setenv(
        "CONVERSATION_INTERNAL_API_KEYS", "key-one-aaaaaaaaaaaa, key-two-bbbbbbbbbbbb"
    )
    monkeypatch.setenv("CONVERSATION_REDIS_URL", "redis://127.0.0.1:6379/0")
    monkeypatch.setenv(
        "CONVERSATION_WEBHOOK_SECRET", "whsec_" + "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0"
    )
    settings = ConversationSettings()
    assert settings.effective_internal_keys() == {"key-one-aaaaaaaaaaaa", "key-two-bbbbbbbbbbbb"}
    assert "key-one" not in repr(settings)  # secrets never print


def test_the_development_jwt_secret_is_long_enough_for_hs256(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("CONVERSATION_ENVIRONMENT", raising=False)
    monkeypatch.delenv("CONVERSATION_JWT_SECRET", raising=False)
    settings = ConversationSettings(_env_file=None)  # type: ignore[call-arg]
    secret = settings.effective_jwt_secret()
    assert secret == DEV_JWT_SECRET
    assert len(secret) >= 32  # what the configuration table asks of every HS256 secret
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # PyJWT's InsecureKeyLengthWarning included
        token = issue_token(secret, tenant="t", user="u")
        assert TokenVerifier(settings).verify(token).user_id == "u"


@pytest.mark.parametrize("environment", [Environment.TEST, Environment.PRODUCTION])
def test_the_development_jwt_secret_is_refused_outside_development(
    environment: Environment,
) -> None:
    with pytest.raises(ValueError, match="CONVERSATION_JWT_SECRET"):
        ConversationSettings(
            environment=environment,
            jwt_secret=DEV_JWT_SECRET,  # type: ignore[arg-type]
            internal_api_keys="k" * 30,  # type: ignore[arg-type]
            redis_url="redis://r",
            webhook_secret="whsec_" + "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0",  # type: ignore[arg-type]
        )


def test_queue_prefix_defaults_to_conversation_and_refuses_characters_outside_names(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("CONVERSATION_QUEUE_PREFIX", raising=False)
    assert ConversationSettings(_env_file=None).queue_prefix == "conversation"  # type: ignore[call-arg]
    monkeypatch.setenv("CONVERSATION_QUEUE_PREFIX", "acme.chat")
    assert ConversationSettings(_env_file=None).queue_prefix == "acme.chat"  # type: ignore[call-arg]
    monkeypatch.setenv("CONVERSATION_QUEUE_PREFIX", "has space")
    with pytest.raises(ValueError, match="queue_prefix"):
        ConversationSettings(_env_file=None)  # type: ignore[call-arg]
