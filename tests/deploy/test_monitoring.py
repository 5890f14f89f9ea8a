"""The monitoring files in deploy/: alert rules pass ``promtool`` (syntax and their unit tests),
and the rules and the Grafana dashboard use only metrics the service and its workers export."""

import re
import shutil
import subprocess
from pathlib import Path

import orjson
import yaml
from prometheus_client import CollectorRegistry

from conversation_service.metrics import JobMetrics, ServiceMetrics
from conversation_service.observability import Metrics
from conversation_service.services.rate_limits import RateLimitMetrics

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
RULES = DEPLOY / "prometheus" / "alerts.yml"
DASHBOARD = DEPLOY / "grafana" / "conversation-service.json"
# Prometheus's own series, not the service's.
BUILTIN = {"up"}


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    assert binary, "promtool is missing: apt-get install prometheus (.ci/run does)"
    return subprocess.run(
        [binary, *args], cwd=RULES.parent, capture_output=True, text=True, timeout=60
    )


def exported_names() -> set[str]:
    """Every sample name the API process and a worker process can export."""
    api = Metrics()
    ServiceMetrics(api.registry)
    RateLimitMetrics(api.registry)
    registries: list[CollectorRegistry] = [api.registry, JobMetrics().registry]
    names = set()
    for registry in registries:
        for family in registry.collect():
            names.add(family.name)
            suffixes = {
                "counter": ("_total",),
                "histogram": ("_bucket", "_sum", "_count"),
            }.get(family.type, ("",))
            names.update(family.name + suffix for suffix in suffixes)
    return names


def metric_names(expr: str) -> set[str]:
    without_strings = re.sub(r'"[^"]*"', "", expr)
    without_ranges = re.sub(r"\[[^\]]*\]", "", without_strings)
    words = set(re.findall(r"\b[a-z_][a-z0-9_]*\b", without_ranges))
    return {word for word in words if word.startswith(("conversation_", "http_", "rate_limit_"))}


def test_alert_rules_pass_promtool_check_and_their_unit_tests() -> None:
    checked = promtool("check", "rules", RULES.name)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = promtool("test", "rules", "alerts_test.yml")
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_alerts_cover_queue_age_outbox_callbacks_5xx_and_readiness() -> None:
    rules = yaml.safe_load(RULES.read_text())["groups"][0]["rules"]
    used = {name for rule in rules for name in metric_names(rule["expr"])}
    assert {
        "conversation_queue_oldest_job_age_seconds",
        "conversation_outbox_oldest_age_seconds",
        "conversation_callback_attempts_total",
        "http_requests_total",
        "conversation_dependency_up",
    } <= used
    assert used <= exported_names()


def test_the_dashboard_queries_only_exported_metrics() -> None:
    dashboard = orjson.loads(DASHBOARD.read_bytes())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]
    used = set().union(*(metric_names(expr) for expr in exprs))
    exported = exported_names()
    assert used <= exported, used - exported
    # Every operator metric of the issue has a panel.
    assert {
        "conversation_queue_depth",
        "conversation_queue_oldest_job_age_seconds",
        "conversation_jobs_total",
        "conversation_job_duration_seconds_bucket",
        "conversation_outbox_jobs",
        "conversation_callback_attempts_total",
        "conversation_callback_latency_seconds_bucket",
        "conversation_callback_delivery_attempts_count",
        "conversation_realtime_connections",
        "conversation_events_published_total",
        "conversation_event_fanout_lag_seconds_bucket",
        "rate_limit_rejections_total",
    } <= used
