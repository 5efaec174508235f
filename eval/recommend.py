"""RAG, fine-tune, both or neither — with reasons drawn from the numbers and the stated needs.

"Not significantly different" is not "as good": with 50 questions two arms' CIs overlap across a
10-point gap. A cheaper arm stands in for the best one only when the paired 95% CI of its
difference from the best arm rules out a loss larger than the one the user accepts
(`Needs.accept_loss`, an equivalence margin); otherwise the reason says how far below it may be.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from eval.costs import ArmCost
from eval.stats import Estimate, Paired, paired_compare
from pipelines.arms import ARMS, BASE


@dataclass
class Needs:
    docs_change_often: bool = False
    need_citations: bool = False
    latency_budget_ms: float | None = None
    offline_edge: bool = False
    accept_loss: float = 0.05  # the drop in the primary metric below the best arm a cheaper arm may cost


@dataclass
class Recommendation:
    choice: str  # rag | fine-tune | both | neither | undecided (no base arm to compare with)
    arm: str | None
    reasons: list[str] = field(default_factory=list)
    flips: list[str] = field(default_factory=list)


def _pct(x: float) -> str:
    return f"{100 * x:.0f}%"


def _pts(x: float) -> str:
    return f"{100 * x:.0f} points"


def recommend(quality: dict[str, Estimate], paired_vs_base: dict[str, Paired], costs: dict[str, ArmCost],
              needs: Needs, metric: str, per_question: dict[str, list[float]] | None = None) -> Recommendation:
    """Pick, among the arms significantly better than base, the one the needs and costs favour from
    those shown equivalent to the best (paired CI of the difference within `needs.accept_loss`).

    `per_question`: each arm's scores on the same questions in the same order (for the paired
    comparison with the best arm); without it only the best arm qualifies.
    """
    if BASE not in quality:
        return Recommendation("undecided", None, [
            "this run has no base arm: ragft recommends an arm only when it beats the closed-book base model on the "
            f"same questions; {', '.join(sorted(quality))} are compared with each other in *Paired comparisons*"],
            ["evaluate with base among the arms"])
    better = {a: p for a, p in paired_vs_base.items() if p.significant and p.diff.mean > 0}
    if not better:
        shown = ", ".join(f"{a} {_pct(p.diff.mean)} [{_pct(p.diff.lo)}, {_pct(p.diff.hi)}]" for a, p in paired_vs_base.items())
        return Recommendation(ARMS[BASE].verdict, BASE, [
            f"no arm beats the closed-book base model significantly on {metric} (difference vs base with 95% CI: {shown})"],
            ["more eval questions (narrower CIs)", "a larger base model", "better retrieval or more training paraphrases"])
    same = [f"{a}: no significant difference from base on {metric} ({_pct(p.diff.mean)} "
            f"[{_pct(p.diff.lo)}, {_pct(p.diff.hi)}], p={p.p_bootstrap:.3f})"
            for a, p in sorted(paired_vs_base.items()) if a not in better]
    best = max(better, key=lambda a: quality[a].mean)
    reasons = [f"{a}: {metric} {_pct(quality[a].mean)} [{_pct(quality[a].lo)}, {_pct(quality[a].hi)}], "
               f"+{_pct(better[a].diff.mean)} over base (p={better[a].p_bootstrap:.3f})" for a in sorted(better)] + same
    flips: list[str] = []
    # An arm is as good as the best only when the paired CI bounds its loss by the accepted margin.
    tied, unproven = [best], {}
    for a in sorted(better):
        if a == best or per_question is None or len(per_question.get(a, [])) != len(per_question.get(best, [])):
            continue
        d = paired_compare(best, per_question[best], a, per_question[a]).diff  # a − best
        worst = max(0.0, -d.lo)
        if d.lo >= -needs.accept_loss:
            tied.append(a)
            reasons.append(f"{a} is at most {_pts(worst)} below {best} (paired 95% CI of {a} − {best}: "
                           f"{_pct(d.mean)} [{_pct(d.lo)}, {_pct(d.hi)}]), within the accepted loss of "
                           f"{_pts(needs.accept_loss)}")
        else:
            unproven[a] = worst
            shown = "significantly below" if d.hi < 0 else "not significantly different, but not shown to be as good:"
            reasons.append(f"{a} is {shown} {best}: it may be up to {_pts(worst)} below (paired 95% CI of {a} − {best}: "
                           f"{_pct(d.mean)} [{_pct(d.lo)}, {_pct(d.hi)}]; accepted loss {_pts(needs.accept_loss)})")

    def score(a: str) -> tuple[float, ...]:
        penalty = 0.0
        if needs.docs_change_often and ARMS[a].uses_finetune:
            penalty += 1  # every document change means retraining
        if needs.need_citations and not ARMS[a].uses_retrieval:
            penalty += 1  # no passages to cite
        if needs.offline_edge and ARMS[a].uses_retrieval:
            penalty += 0.5  # an index and an embedding model to ship
        if needs.latency_budget_ms and costs[a].latency_p95_ms > needs.latency_budget_ms:
            penalty += 2
        return (penalty, costs[a].per_1k_answers)

    pick = min(tied, key=score)
    if len(tied) > 1:
        others = [a for a in tied if a != pick]
        reasons.append(f"{', '.join(others)} {'is' if len(others) == 1 else 'are'} within the accepted loss of "
                       f"{pick}; {pick} wins on the stated needs and cost ({costs[pick].per_1k_answers:.3f} per 1k answers)")
    arm = ARMS[pick]
    if needs.docs_change_often and arm.uses_retrieval and not arm.uses_finetune:
        reasons.append("documents change often: an index update takes seconds, a fine-tune minutes")
    if needs.need_citations and arm.uses_retrieval:
        reasons.append("citations needed: the rag arms return their source passages")
    if needs.latency_budget_ms:
        reasons.append(f"p95 latency {costs[pick].latency_p95_ms:.0f} ms vs budget {needs.latency_budget_ms:.0f} ms")
    closed_ft = [a for a in better if ARMS[a].uses_finetune and not ARMS[a].uses_retrieval]
    if arm.uses_retrieval and closed_ft:
        flips.append(f"if documents rarely change and citations are not needed, {closed_ft[0]} answers without retrieval")
    if arm.uses_finetune and not arm.uses_retrieval:
        flips.append(f"if documents change often or answers must cite sources, {_plain_rag()}")
    if pick == BASE:
        flips.append("a significant gain of another arm")
    for a, worst in unproven.items():
        if costs[a].per_1k_answers < costs[pick].per_1k_answers:
            flips.append(f"accepting a loss of {_pts(worst)} (the worst case of {a}, which is cheaper), or more "
                         f"questions to narrow its CI")
    return Recommendation(arm.verdict, pick, reasons, flips)


def _plain_rag() -> str:
    """The arm that retrieves without a fine-tune."""
    return next(a.name for a in ARMS.values() if a.uses_retrieval and not a.uses_finetune)
