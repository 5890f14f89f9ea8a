"""Results, targets, the printed table and the JSON file (``bench/results/latest.json``)."""

import json
import platform
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

Unit = Literal["ms", "/s", "KiB", "µs"]
RESULTS_DIR = Path(__file__).parent / "results"


@dataclass(frozen=True, slots=True)
class Target:
    """Allowed range of ``service / baseline``; either bound may be open."""

    low: float | None = None
    high: float | None = None

    def label(self) -> str:
        """``≤ 3×``, ``≥ 0.4×`` or ``0.5–1.5×``."""
        if self.low is not None and self.high is not None:
            return f"{self.low:g}–{self.high:g}×"
        if self.high is not None:
            return f"≤ {self.high:g}×"
        assert self.low is not None
        return f"≥ {self.low:g}×"

    def met_by(self, ratio: float) -> bool:
        """Whether ``ratio`` lies inside the range."""
        return (self.low is None or ratio >= self.low) and (self.high is None or ratio <= self.high)


@dataclass(frozen=True, slots=True)
class Result:
    """One table row: a service figure next to the baseline it is judged against."""

    scenario: str
    backend: str
    unit: Unit
    service: float
    baseline: float
    baseline_label: str
    target: Target | None = None
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        """Service figure divided by the baseline figure."""
        return self.service / self.baseline if self.baseline else float("inf")

    @property
    def verdict(self) -> str:
        """``pass``, ``FAIL`` or ``info`` (no target)."""
        if self.target is None:
            return "info"
        return "pass" if self.target.met_by(self.ratio) else "FAIL"

    def as_json(self) -> dict[str, Any]:
        """The row as plain JSON values."""
        return {
            "scenario": self.scenario,
            "backend": self.backend,
            "unit": self.unit,
            "service": round(self.service, 6),
            "baseline": round(self.baseline, 6),
            "baseline_label": self.baseline_label,
            "ratio": round(self.ratio, 4),
            "target": self.target.label() if self.target else None,
            "verdict": self.verdict,
            "details": self.details,
        }


def _figure(value: float, unit: Unit) -> str:
    if unit == "ms":
        return f"{value:.3f} ms"
    if unit == "µs":
        return f"{value:,.0f} µs"
    if unit == "KiB":
        return f"{value:.1f} KiB"
    return f"{value:,.0f}/s"


def format_table(results: Sequence[Result]) -> str:
    """A fixed-width text table, one row per result, followed by what each baseline is."""
    header = ("scenario", "backend", "service", "raw baseline", "ratio", "target", "result")
    rows = [
        (
            r.scenario,
            r.backend,
            _figure(r.service, r.unit),
            f"{_figure(r.baseline, r.unit)} [{r.baseline_label}]",
            f"{r.ratio:.2f}×",
            r.target.label() if r.target else "–",
            r.verdict,
        )
        for r in results
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    numeric = {2, 3, 4}

    def line(cells: Sequence[str]) -> str:
        return " | ".join(
            cell.rjust(width) if i in numeric else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
        )

    out = [line(header), "-+-".join("-" * width for width in widths)]
    out.extend(line(row) for row in rows)
    return "\n".join(out)


def format_cpu(results: Sequence[Result]) -> str:
    """CPU per request of each distinct service measurement: where the time goes."""
    lines = ["CPU per operation (µs): service process + load client, vs raw driver (bench process)"]
    seen: set[tuple[str, str]] = set()
    for result in results:
        service = result.details.get("service", {})
        if "server_cpu_us" not in service:
            continue
        key = (result.backend, json.dumps(service, sort_keys=True))
        if key in seen:
            continue
        seen.add(key)
        name = re.sub(r" (p50|p99|rate)\b", "", result.scenario, count=1)
        baseline = result.details.get("baseline", {})
        raw = (
            f"raw {baseline['client_cpu_us']:.0f}"
            if "server_cpu_us" not in baseline and "client_cpu_us" in baseline
            else "raw –"
        )
        lines.append(
            f"  {result.backend:<8} {name:<28} server {service['server_cpu_us']:>6.0f}"
            f" + client {service['client_cpu_us']:>4.0f}   {raw}"
        )
    return "\n".join(lines)


def write_json(path: Path, results: Sequence[Result], meta: dict[str, Any]) -> None:
    """Write the results and run metadata as JSON (creating the directory)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "generated_at": datetime.now(UTC).isoformat(),
        "machine": {"python": platform.python_version(), "platform": platform.platform()},
        **meta,
        "results": [result.as_json() for result in results],
    }
    path.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n")
