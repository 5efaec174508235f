"""Cost model (pure): measured compute seconds → money, one-off costs, break-even volumes.

Compute is priced per machine-hour (`price_per_hour`, default 0.10 in any currency: roughly a
2-vCPU cloud VM). An answer costs its measured wall seconds of that machine; an index costs its
build time; a fine-tune its training + export time. Break-even between two arms is the number
of answers after which the arm with the larger one-off cost and the smaller per-answer cost has
paid back the difference.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass


@dataclass
class ArmCost:
    arm: str
    seconds_per_answer: float
    per_1k_answers: float
    one_off: float
    latency_p50_ms: float
    latency_p95_ms: float
    ttft_p50_ms: float
    tokens_per_s: float
    pricing: str = "machine-hour"  # or "per token" (a hosted reference arm, eval/hosted.py)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    v = sorted(values)
    return v[min(len(v) - 1, int(round(q * (len(v) - 1))))]


def arm_cost(arm: str, total_ms: list[float], ttft_ms: list[float], tps: list[float], price_per_hour: float,
             one_off_seconds: float) -> ArmCost:
    sec = statistics.mean(total_ms) / 1000 if total_ms else float("nan")
    per_s = price_per_hour / 3600
    return ArmCost(arm, sec, sec * 1000 * per_s, one_off_seconds * per_s, percentile(total_ms, 0.5),
                   percentile(total_ms, 0.95), percentile(ttft_ms, 0.5), statistics.median(tps) if tps else float("nan"))


def break_even(a: ArmCost, b: ArmCost) -> float | None:
    """Answers after which the arm with more one-off cost but cheaper answers is cheaper overall; None if never."""
    hi, lo = (a, b) if a.one_off >= b.one_off else (b, a)
    per_answer_gain = (lo.per_1k_answers - hi.per_1k_answers) / 1000
    if per_answer_gain <= 0:
        return None
    return (hi.one_off - lo.one_off) / per_answer_gain
