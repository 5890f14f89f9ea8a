"""deploy/nginx.conf closes an idle upstream connection before the API replica does.

uvicorn (``conversation-service serve``) closes a keep-alive connection idle for its
``timeout_keep_alive``. If nginx kept its idle upstream connections longer, a request could be
sent on a connection at the moment the replica closes it: nginx then answers 502, and never
resends a POST (non-idempotent) to the other replica. The load test through nginx met exactly
that (``python -m bench.load --api-replicas 2``: 3 POSTs of 13,017 answered 502). The race is a
matter of microseconds, so this guards the configuration rather than timing it.
"""

import re
from pathlib import Path

import uvicorn

CONFIG = Path(__file__).resolve().parents[1] / "deploy" / "nginx.conf"


def _upstream_keepalive_timeout() -> float:
    text = CONFIG.read_text()
    upstream = re.search(r"upstream conversation_api \{(.*?)\}", text, re.S)
    assert upstream is not None, "deploy/nginx.conf has no conversation_api upstream"
    timeout = re.search(r"^\s*keepalive_timeout\s+(\d+)(ms|s)?;", upstream.group(1), re.M)
    assert timeout is not None, "the upstream must set keepalive_timeout (nginx's default is 60s)"
    value, unit = int(timeout.group(1)), timeout.group(2) or "s"
    return value / 1000 if unit == "ms" else float(value)


def test_nginx_closes_idle_upstream_connections_before_the_replicas_do() -> None:
    # serve passes no timeout_keep_alive, so the replicas use uvicorn's default.
    replica_timeout = uvicorn.Config(app=object()).timeout_keep_alive

    assert _upstream_keepalive_timeout() < replica_timeout
