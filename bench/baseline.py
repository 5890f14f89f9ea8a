"""The code before a change, side by side: a git worktree of ``--baseline-ref`` with its own venv.

Both are created once per commit under ``.bench-baseline/<commit>/`` (git ignores the folder) and
reused by later runs: ``git worktree add --detach``, then ``python -m venv`` and
``pip install -c constraints.txt -e .`` with that worktree's own files. The baseline service runs
from that venv with ``PYTHONPATH`` pointing at its sources, so nothing of the current tree leaks
in. Remove a stale one with ``git worktree remove .bench-baseline/<commit>``.
"""

import asyncio
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.server import ServiceConfig

ROOT = Path(__file__).resolve().parent.parent
BASELINE_DIR = ROOT / ".bench-baseline"
MAIN_BRANCH = "main"


class BaselineError(RuntimeError):
    """The baseline worktree or its venv could not be made."""


@dataclass(frozen=True, slots=True)
class Baseline:
    """A checked-out commit with an installed venv."""

    commit: str
    tree: Path

    @property
    def command(self) -> tuple[str, ...]:
        """The baseline's ``conversation-service``."""
        return (str(self.tree / ".venv" / "bin" / "conversation-service"),)

    def config(self, current: ServiceConfig, database_url: str) -> ServiceConfig:
        """``current``'s settings for the baseline's process, on its own database."""
        env = {**current.extra_env, "PYTHONPATH": str(self.tree / "src")}
        return ServiceConfig(
            database_url=database_url,
            redis_url=current.redis_url,
            jwt_secret=current.jwt_secret,
            internal_key=current.internal_key,
            extra_env=env,
            command=self.command,
        )


async def _run(*args: str, cwd: Path = ROOT) -> str:
    proc = await asyncio.create_subprocess_exec(
        *args, cwd=cwd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    output, _ = await proc.communicate()
    text = output.decode(errors="replace").strip()
    if proc.returncode != 0:
        raise BaselineError(f"{' '.join(args)} failed ({proc.returncode}):\n{text[-2000:]}")
    return text


async def default_ref() -> str:
    """Where this branch left ``main`` (the code before the branch's changes)."""
    return await _run("git", "merge-base", "HEAD", MAIN_BRANCH)


async def prepare(ref: str, log: Callable[[str], None]) -> Baseline:
    """The worktree and venv of ``ref``, made now if an earlier run did not."""
    commit = await _run("git", "rev-parse", "--verify", f"{ref}^{{commit}}")
    tree = BASELINE_DIR / commit[:12]
    if not (tree / ".git").exists():
        log(f"bench: baseline: git worktree of {commit[:12]} in {tree}")
        await _run("git", "worktree", "add", "--detach", str(tree), commit)
    stamp = tree / ".venv" / ".installed"
    if not stamp.exists():
        log("bench: baseline: creating its venv (once per commit)")
        await _run(sys.executable, "-m", "venv", "--clear", str(tree / ".venv"))
        pip = str(tree / ".venv" / "bin" / "pip")
        await _run(pip, "install", "--quiet", "-c", "constraints.txt", "-e", ".", cwd=tree)
        stamp.touch()
    return Baseline(commit, tree)
