from eval.costs import ArmCost
from eval.recommend import Needs, recommend
from eval.stats import Estimate, paired_compare


def _cost(arm: str, per1k: float, p95: float = 500.0) -> ArmCost:
    return ArmCost(arm, 1.0, per1k, 0.0, 300.0, p95, 100.0, 50.0)


def test_neither_when_nothing_beats_base() -> None:
    same = [1.0, 0.0] * 20
    r = recommend({"base": Estimate(0.5, 0.35, 0.65, 40), "rag": Estimate(0.5, 0.35, 0.65, 40)},
                  {"rag": paired_compare("base", same, "rag", list(same))}, {"rag": _cost("rag", 1)}, Needs(), "contains")
    assert r.choice == "neither" and "no arm beats" in r.reasons[0]


def test_clear_winner_and_needs_decide_between_ties() -> None:
    base = [0.0] * 40
    good = [1.0] * 30 + [0.0] * 10
    q = {"base": Estimate(0, 0, 0, 40), "rag": Estimate(0.75, 0.6, 0.88, 40), "ft": Estimate(0.75, 0.6, 0.88, 40)}
    paired = {"rag": paired_compare("base", base, "rag", good), "ft": paired_compare("base", base, "ft", good)}
    costs = {"rag": _cost("rag", 2.0), "ft": _cost("ft", 1.0)}
    assert recommend(q, paired, costs, Needs(), "contains").choice == "fine-tune"  # tie → cheaper
    r = recommend(q, paired, costs, Needs(need_citations=True), "contains")
    assert r.choice == "rag" and any("citations" in x for x in r.reasons)
    paired["ft"] = paired_compare("base", base, "ft", list(base))
    r = recommend(q, paired, costs, Needs(), "contains")
    assert r.choice == "rag" and any(x.startswith("ft: no significant difference from base") for x in r.reasons)
