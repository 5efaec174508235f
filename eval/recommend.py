"""RAG, fine-tune, both or neither — with reasons drawn from the numbers and the stated needs."""

from __future__ import annotations

from dataclasses import dataclass, field

from eval.costs import ArmCost
from eval.stats import Estimate, Paired


@dataclass
class Needs:
    docs_change_often: bool = False
    need_citations: bool = False
    latency_budget_ms: float | None = None
    offline_edge: bool = False


@dataclass
class Recommendation:
    choice: str  # rag | fine-tune | both | neither
    arm: str | None
    reasons: list[str] = field(default_factory=list)
    flips: list[str] = field(default_factory=list)


def _pct(x: float) -> str:
    return f"{100 * x:.0f}%"


def recommend(quality: dict[str, Estimate], paired_vs_base: dict[str, Paired], costs: dict[str, ArmCost],
              needs: Needs, metric: str) -> Recommendation:
    """Pick the cheapest arm that is significantly better than base and not significantly worse than the best."""
    better = {a: p for a, p in paired_vs_base.items() if p.significant and p.diff.mean > 0}
    if not better:
        shown = ", ".join(f"{a} {_pct(p.diff.mean)} [{_pct(p.diff.lo)}, {_pct(p.diff.hi)}]" for a, p in paired_vs_base.items())
        return Recommendation("neither", "base", [
            f"no arm beats the closed-book base model significantly on {metric} (difference vs base with 95% CI: {shown})"],
            ["more eval questions (narrower CIs)", "a larger base model", "better retrieval or more training paraphrases"])
    same = [f"{a}: no significant difference from base on {metric} ({_pct(p.diff.mean)} "
            f"[{_pct(p.diff.lo)}, {_pct(p.diff.hi)}], p={p.p_bootstrap:.3f})"
            for a, p in sorted(paired_vs_base.items()) if a not in better]
    best = max(better, key=lambda a: quality[a].mean)
    # arms whose CI overlaps the best arm's are "as good"; prefer what the needs and costs favour
    tied = [a for a in better if quality[a].hi >= quality[best].lo]
    reasons = [f"{a}: {metric} {_pct(quality[a].mean)} [{_pct(quality[a].lo)}, {_pct(quality[a].hi)}], "
               f"+{_pct(better[a].diff.mean)} over base (p={better[a].p_bootstrap:.3f})" for a in sorted(better)] + same
    flips: list[str] = []

    def score(a: str) -> tuple[float, ...]:
        penalty = 0.0
        if needs.docs_change_often and a in ("ft", "ft_rag"):
            penalty += 1  # every document change means retraining
        if needs.need_citations and a == "ft":
            penalty += 1  # no passages to cite
        if needs.offline_edge and a in ("rag", "ft_rag"):
            penalty += 0.5  # an index and an embedding model to ship
        if needs.latency_budget_ms and costs[a].latency_p95_ms > needs.latency_budget_ms:
            penalty += 2
        return (penalty, costs[a].per_1k_answers)

    pick = min(tied, key=score)
    if len(tied) > 1:
        others = [a for a in tied if a != pick]
        reasons.append(f"{', '.join(others)} {'is' if len(others) == 1 else 'are'} not significantly different from "
                       f"{pick} (overlapping CIs); {pick} wins on the stated needs and cost "
                       f"({costs[pick].per_1k_answers:.3f} per 1k answers)")
    if needs.docs_change_often and pick in ("rag",):
        reasons.append("documents change often: an index update takes seconds, a fine-tune minutes")
    if needs.need_citations and pick in ("rag", "ft_rag"):
        reasons.append("citations needed: the rag arms return their source passages")
    if needs.latency_budget_ms:
        reasons.append(f"p95 latency {costs[pick].latency_p95_ms:.0f} ms vs budget {needs.latency_budget_ms:.0f} ms")
    if pick in ("rag", "ft_rag") and "ft" in better:
        flips.append("if documents rarely change and citations are not needed, ft answers without retrieval")
    if pick == "ft":
        flips.append("if documents change often or answers must cite sources, rag")
    if pick == "base":
        flips.append("a significant gain of another arm")
    for a in tied:
        if a != pick:
            flips.append(f"a narrower CI separating {a} from {pick}")
    choice = {"rag": "rag", "ft": "fine-tune", "ft_rag": "both", "base": "neither"}[pick]
    return Recommendation(choice, pick, reasons, flips)
