"""Counters and a latency histogram, rendered in the Prometheus text format."""

from __future__ import annotations

import bisect
from collections import defaultdict

__all__ = ["Metrics"]

LATENCY_BUCKETS_S = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


class Metrics:
    """Process-local metrics of one worker."""

    def __init__(self) -> None:
        self.counters: defaultdict[str, float] = defaultdict(int)  # ints, and CPU seconds
        self._buckets = [0] * (len(LATENCY_BUCKETS_S) + 1)
        self._sum = 0.0
        self._count = 0
        self.gauges: dict[str, float] = {}
        self.info: dict[str, str] = {}

    def inc(self, name: str, by: int = 1) -> None:
        """Add to a counter (names follow Prometheus rules, labels inline: ``x{mode="a"}``)."""
        self.counters[name] += by

    def observe_score(self, seconds: float, cpu_s: float | None = None, decide_cpu_s: float | None = None) -> None:
        """Record one score request's latency and, if given, the CPU its handler and ``decide`` used.

        The CPU totals (``score_cpu_seconds_total{part="handler"|"decide"}``) are thread CPU time,
        so a benchmark can split a worker's CPU per request from ``/proc`` into the decision, the
        rest of the view, and everything outside the view (HTTP server, event loop, Kafka).
        """
        self._buckets[bisect.bisect_left(LATENCY_BUCKETS_S, seconds)] += 1
        self._sum += seconds
        self._count += 1
        if cpu_s is not None:
            self.counters['score_cpu_seconds_total{part="handler"}'] += cpu_s
        if decide_cpu_s is not None:
            self.counters['score_cpu_seconds_total{part="decide"}'] += decide_cpu_s

    def render(self) -> str:
        """The Prometheus exposition text."""
        lines: list[str] = []
        kinds: tuple[tuple[str, dict[str, float]], ...] = (("counter", self.counters), ("gauge", self.gauges))
        for kind, values in kinds:
            typed: set[str] = set()
            for name, value in sorted(values.items()):
                base = name.split("{", 1)[0]
                if base not in typed:
                    typed.add(base)
                    lines.append(f"# TYPE offerstream_{base} {kind}")
                lines.append(f"offerstream_{name} {value}")
        for name, text in sorted(self.info.items()):
            lines.append(f"# TYPE offerstream_{name}_info gauge")
            lines.append(f'offerstream_{name}_info{{value="{text}"}} 1')
        lines.append("# TYPE offerstream_score_latency_seconds histogram")
        cumulative = 0
        for bound, count in zip((*LATENCY_BUCKETS_S, float("inf")), self._buckets, strict=True):
            cumulative += count
            le = "+Inf" if bound == float("inf") else repr(bound)
            lines.append(f'offerstream_score_latency_seconds_bucket{{le="{le}"}} {cumulative}')
        lines.append(f"offerstream_score_latency_seconds_sum {self._sum}")
        lines.append(f"offerstream_score_latency_seconds_count {self._count}")
        return "\n".join(lines) + "\n"
