"""The hosted reference beside the local arms (pure): its per-token cost, its counted failures, and
what the local pick gives up or saves against it.

A local arm costs the machine-seconds it used (eval/costs.py); the hosted arm costs the tokens the
endpoint reported at the user's prices. Self-hosting is compared as a dedicated machine running all
month (`HOURS_PER_MONTH` × price per hour) against the hosted model's per-answer price: above the
break-even volume the machine is cheaper, provided it can serve that many answers at the latency
measured here (its capacity is stated beside it).
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Sequence
from typing import Any

from eval.costs import ArmCost, percentile
from eval.records import AnswerRow
from eval.stats import Estimate, paired_compare
from pipelines.arms import hosted_arms, local_arms

HOURS_PER_MONTH = 730.0  # 365 × 24 / 12


def failure_kind(error: str) -> str:
    """What a failure was, without the per-answer detail (the text before the first colon)."""
    return error.split(":", 1)[0].strip()


def answer_failures(answers: Sequence[AnswerRow]) -> dict[str, dict[str, int]]:
    """arm → kind of failure → answers that failed so (only arms with failures)."""
    out: dict[str, Counter[str]] = {}
    for a in answers:
        if a.get("error"):
            out.setdefault(a["arm"], Counter())[failure_kind(str(a["error"]))] += 1
    return {arm: dict(c) for arm, c in out.items()}


def hosted_cost(arm: str, rows: Sequence[AnswerRow], prices: dict[str, Any]) -> ArmCost:
    """The hosted arm's cost per 1k answers from the tokens the endpoint reported; latency over answers
    that arrived (a failed answer's time is a wait, not an answer)."""
    ok = [r for r in rows if not r.get("error")]
    total = [r["total_ms"] for r in ok]
    per_answer = [(r["prompt_tokens"] * prices["input_price_per_1m"] + r["output_tokens"] * prices["output_price_per_1m"])
                  / 1e6 for r in ok]
    tps = [r["tokens_per_s"] for r in ok if r["tokens_per_s"]]
    return ArmCost(arm, statistics.mean(total) / 1000 if total else float("nan"),
                   1000 * statistics.mean(per_answer) if per_answer else float("nan"), 0.0, percentile(total, 0.5),
                   percentile(total, 0.95), percentile([r["ttft_ms"] for r in ok], 0.5),
                   statistics.median(tps) if tps else float("nan"), pricing="per token")


def reference_summary(arms: list[str], per_question: dict[str, list[float]], quality: dict[str, Estimate],
                      costs: dict[str, ArmCost], pick: str | None, price_per_hour: float, prices: dict[str, Any],
                      rate_limited: int) -> dict[str, Any] | None:
    """The best hosted arm against the recommended local arm (or the best local one): paired difference,
    quality and cost ratios, and the self-hosting break-even volume."""
    hosted = hosted_arms(arms)
    if not hosted:
        return None
    best = max(hosted, key=lambda a: quality[a].mean)
    local = pick if pick in local_arms(arms) else max(local_arms(arms), key=lambda a: quality[a].mean, default=None)
    out: dict[str, Any] = {"prices": prices, "hosted": best, "local": local, "rate_limited": rate_limited,
                           "hosted_per_1k": costs[best].per_1k_answers, "hosted_quality": quality[best].mean}
    if local is None or len(per_question[local]) != len(per_question[best]) or not per_question[best]:
        return out
    p = paired_compare(local, per_question[local], best, per_question[best])  # hosted − local
    h_cost, l_cost = costs[best].per_1k_answers, costs[local].per_1k_answers
    month = HOURS_PER_MONTH * price_per_hour
    per_answer = h_cost / 1000
    out.update({
        "diff": {"mean": p.diff.mean, "lo": p.diff.lo, "hi": p.diff.hi}, "p_bootstrap": p.p_bootstrap,
        "significant": p.significant, "local_quality": quality[local].mean, "local_per_1k": l_cost,
        "quality_ratio": quality[local].mean / quality[best].mean if quality[best].mean > 0 else None,
        "cost_ratio": l_cost / h_cost if h_cost > 0 else None, "machine_month": month,
        "break_even_per_month": month / per_answer if per_answer > 0 else None,
        "capacity_per_month": (HOURS_PER_MONTH * 3600 / costs[local].seconds_per_answer
                               if costs[local].seconds_per_answer > 0 else None),
    })
    return out


def reference_line(ref: dict[str, Any]) -> str:
    """The recommendation's sentence on the hosted model: better by how much, at what price, and when
    self-hosting pays."""
    pr = ref["prices"]
    head = (f"hosted reference {pr['model']} ({ref['hosted']}; priced {pr['input_price_per_1m']:g} in / "
            f"{pr['output_price_per_1m']:g} out per 1M tokens as of {pr['prices_date']}): "
            f"{_money(ref['hosted_per_1k'])} per 1k answers")
    if "diff" not in ref:
        return head + "; no local arm answered the same questions to compare it with"
    d, local = ref["diff"], ref["local"]
    pts = f"{100 * d['mean']:+.0f} points [{100 * d['lo']:+.0f}, {100 * d['hi']:+.0f}] (paired 95% CI, p={ref['p_bootstrap']:.3f})"
    verdict = (f"better than {local} by {pts}" if ref["significant"] and d["mean"] > 0 else
               f"worse than {local}: {pts}" if ref["significant"] else f"not significantly different from {local}: {pts}")
    parts = [f"{head}; {verdict}"]
    if ref.get("quality_ratio") is not None and ref.get("cost_ratio") is not None:
        parts.append(f"{local} reaches {100 * ref['quality_ratio']:.0f}% of its quality at {100 * ref['cost_ratio']:.0f}% "
                     f"of its cost ({_money(ref['local_per_1k'])} per 1k answers)")
    be, cap = ref.get("break_even_per_month"), ref.get("capacity_per_month")
    if be is not None:
        line = (f"a dedicated machine ({_money(ref['machine_month'])} per month) is cheaper than the hosted model above "
                f"{be:,.0f} answers/month")
        if cap is not None:
            line += (f"; it serves up to {cap:,.0f} answers/month at {local}'s measured latency" if be <= cap else
                     f", more than the {cap:,.0f} answers/month one machine serves at {local}'s measured latency: "
                     "at any volume one machine can serve, the hosted model costs less")
        parts.append(line)
    return "; ".join(parts)


def _money(x: float) -> str:
    return f"{x:.4f}" if x < 1 else f"{x:,.2f}"
