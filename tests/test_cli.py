"""The console script: migrate, serve's refusal on an unmigrated database, placeholders."""

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

from tests.conftest import INTERNAL_KEY, JWT_SECRET


def run_cli(
    *args: str, env: dict[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "conversation_service.cli", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_serve_refuses_unmigrated_database_then_migrate_fixes_it(
    tmp_path: Path, redis_url: str
) -> None:
    env = {
        "CONVERSATION_ENVIRONMENT": "test",
        "CONVERSATION_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/cli.db",
        "CONVERSATION_REDIS_URL": redis_url,
        "CONVERSATION_JWT_SECRET": JWT_SECRET,
        "CONVERSATION_INTERNAL_API_KEYS": INTERNAL_KEY,
    }
    refused = run_cli("serve", "--port", "1", env=env)
    assert refused.returncode == 2
    assert "run `conversation-service migrate`" in refused.stderr
    migrated = run_cli("migrate", env=env)
    assert migrated.returncode == 0, migrated.stderr
    assert run_cli("migrate", env=env).returncode == 0  # idempotent


def test_production_start_with_placeholder_secret_fails_clearly(tmp_path: Path) -> None:
    env = {
        "CONVERSATION_ENVIRONMENT": "production",
        "CONVERSATION_JWT_SECRET": "changeme",
        "CONVERSATION_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/x.db",
    }
    result = run_cli("serve", env=env)
    assert result.returncode == 2
    assert "CONVERSATION_JWT_SECRET" in result.stderr
    assert "changeme" not in result.stderr


def test_dev_refuses_a_production_environment(tmp_path: Path) -> None:
    env = {
        "CONVERSATION_ENVIRONMENT": "production",
        "CONVERSATION_JWT_SECRET": JWT_SECRET,
        "CONVERSATION_INTERNAL_API_KEYS": INTERNAL_KEY,
        "CONVERSATION_REDIS_URL": "redis://127.0.0.1:1/0",
        "CONVERSATION_WEBHOOK_SECRET": "whsec_" + "a" * 43,
        "CONVERSATION_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/w.db",
    }
    result = run_cli("dev", "--data-dir", str(tmp_path), env=env)
    assert result.returncode == 2
    assert "production" in result.stderr


def test_migrate_on_a_fresh_clone_creates_the_default_database_folder(tmp_path: Path) -> None:
    # The SQLite default lives in .data/ under the working directory, which nothing made yet.
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVERSATION_")}
    result = subprocess.run(
        [sys.executable, "-m", "conversation_service.cli", "migrate"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / ".data" / "conversations.db").is_file()


def test_api_keys_create_as_the_readme_shows_prints_the_key_alone(tmp_path: Path) -> None:
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    shown = re.search(r"^KEY=\$\(conversation-service (api-keys create [^)]*)\)$", readme, re.M)
    assert shown is not None, "the README shows no `api-keys create` command"
    args = shlex.split(shown.group(1))
    env = {"CONVERSATION_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/keys.db"}
    unmigrated = run_cli(*args, env=env)
    assert unmigrated.returncode == 2
    assert unmigrated.stdout == ""
    assert "conversation-service migrate" in unmigrated.stderr
    assert run_cli("migrate", env=env).returncode == 0
    issued = run_cli(*args, env=env)
    assert issued.returncode == 0, issued.stderr
    key = issued.stdout.removesuffix("\n")
    assert key.startswith("cs_")
    assert key.split() == [key]  # the key alone: one word on one line, nothing else
    assert key not in issued.stderr
    assert "only this once" in issued.stderr
