"""deploy/nginx.conf run by Debian's nginx in the foreground, for tests and the load test.

The deployment's own file runs; only its ``listen`` port and the upstream ``server`` lines change
(one per replica given, with the options of the file's first ``server`` line). nginx writes its
pid and error log into a scratch directory and stops with the context.
"""

import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.live_server import free_port, tail

CONFIG = Path(__file__).resolve().parents[1] / "deploy" / "nginx.conf"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
_SERVER = re.compile(r"(?m)^(\s*)server api-\d+:8000([^;]*);\n")


def available() -> bool:
    """Whether nginx is installed."""
    return Path(NGINX).exists()


def render(config: str, port: int, upstreams: list[int]) -> str:
    """The deployment's config with this listen port and one upstream line per port."""
    config, listens = re.subn(r"(?m)^(\s*)listen \d+;", rf"\1listen 127.0.0.1:{port};", config)
    assert listens == 1, "deploy/nginx.conf should have one listen line"
    first = _SERVER.search(config)
    assert first is not None, "deploy/nginx.conf should name its replicas api-1, api-2…"
    indent, options = first.group(1), first.group(2)
    lines = "".join(f"{indent}server 127.0.0.1:{p}{options};\n" for p in upstreams)
    config = _SERVER.sub("", config)
    return config[: first.start()] + lines + config[first.start() :]


@contextmanager
def nginx(upstreams: list[int]) -> Iterator[str]:
    """nginx running deploy/nginx.conf for ``upstreams``; yields its base URL."""
    with tempfile.TemporaryDirectory(prefix="nginx-") as scratch:
        root = Path(scratch)
        root.chmod(0o755)
        port = free_port()
        (root / "nginx.conf").write_text(render(CONFIG.read_text(), port, upstreams))
        command = [
            NGINX,
            *("-p", str(root), "-c", str(root / "nginx.conf"), "-e", str(root / "error.log")),
            *("-g", f"daemon off; pid {root / 'nginx.pid'};"),
        ]
        checked = subprocess.run([*command, "-t"], capture_output=True, text=True, check=False)
        assert checked.returncode == 0, checked.stderr
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL)
        try:
            base_url = f"http://127.0.0.1:{port}"
            _wait_for(base_url, process, root / "error.log")
            yield base_url
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _wait_for(base_url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    with httpx.Client(base_url=base_url, timeout=2.0) as client:
        for _ in range(300):
            assert process.poll() is None, f"nginx exited: {tail(log)}"
            try:
                if client.get("/health/live").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
    raise AssertionError(f"nginx did not answer: {tail(log)}")
