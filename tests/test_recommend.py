from eval.costs import ArmCost
from eval.recommend import Needs, recommend
from eval.stats import Estimate, bootstrap_ci, paired_compare


def _cost(arm: str, per1k: float, p95: float = 500.0) -> ArmCost:
    return ArmCost(arm, 1.0, per1k, 0.0, 300.0, p95, 100.0, 50.0)


def test_neither_when_nothing_beats_base() -> None:
    same = [1.0, 0.0] * 20
    r = recommend({"base": Estimate(0.5, 0.35, 0.65, 40), "rag": Estimate(0.5, 0.35, 0.65, 40)},
                  {"rag": paired_compare("base", same, "rag", list(same))}, {"rag": _cost("rag", 1)}, Needs(), "contains")
    assert r.choice == "neither" and "no arm beats" in r.reasons[0]


def _setup(rag: list[float], ft: list[float]) -> tuple[dict, dict, dict, dict]:
    base = [0.0] * len(rag)
    q = {"base": bootstrap_ci(base), "rag": bootstrap_ci(rag), "ft": bootstrap_ci(ft)}
    paired = {"rag": paired_compare("base", base, "rag", rag), "ft": paired_compare("base", base, "ft", ft)}
    return q, paired, {"rag": _cost("rag", 2.0), "ft": _cost("ft", 1.0)}, {"base": base, "rag": rag, "ft": ft}


def test_same_answers_are_equivalent_and_needs_decide() -> None:
    good = [1.0] * 30 + [0.0] * 10
    q, paired, costs, per = _setup(good, list(good))
    r = recommend(q, paired, costs, Needs(), "contains", per)
    assert r.choice == "fine-tune" and any("at most 0 points below" in x for x in r.reasons)  # tie → cheaper
    r = recommend(q, paired, costs, Needs(need_citations=True), "contains", per)
    assert r.choice == "rag" and any("citations" in x for x in r.reasons)
    paired["ft"] = paired_compare("base", per["base"], "ft", per["base"])
    r = recommend(q, paired, costs, Needs(), "contains", per)
    assert r.choice == "rag" and any(x.startswith("ft: no significant difference from base") for x in r.reasons)


def test_overlapping_cis_are_not_as_good_without_a_paired_bound() -> None:
    # 40 questions: ft right on 26, rag on 30, ft never right where rag is wrong. Marginal CIs
    # overlap widely, and the old rule called it a tie; the paired CI allows a loss over 5 points.
    rag = [1.0] * 30 + [0.0] * 10
    ft = [1.0] * 26 + [0.0] * 14
    q, paired, costs, per = _setup(rag, ft)
    assert q["ft"].hi >= q["rag"].lo  # overlapping marginal CIs
    r = recommend(q, paired, costs, Needs(), "contains", per)
    assert r.arm == "rag"
    worst = next(x for x in r.reasons if x.startswith("ft is "))
    assert "may be up to" in worst and "accepted loss 5 points" in worst
    assert any("accepting a loss of" in f for f in r.flips)
    # a user who accepts a 25-point loss gets the cheaper arm, with the worst case stated
    r = recommend(q, paired, costs, Needs(accept_loss=0.25), "contains", per)
    assert r.arm == "ft" and any("within the accepted loss of 25 points" in x for x in r.reasons)


def test_without_per_question_scores_only_the_best_arm_qualifies() -> None:
    good = [1.0] * 30 + [0.0] * 10
    q, paired, costs, _ = _setup(good, list(good))
    assert recommend(q, paired, costs, Needs(), "contains").arm in ("rag", "ft")


def test_a_run_without_base_is_undecided_not_neither() -> None:
    # seed-variance runs evaluate rag, ft, ft_rag only: nothing was compared with closed book
    good = [1.0] * 30 + [0.0] * 10
    q = {"rag": bootstrap_ci(good), "ft_rag": bootstrap_ci(good)}
    r = recommend(q, {}, {"rag": _cost("rag", 2.0), "ft_rag": _cost("ft_rag", 3.0)}, Needs(), "contains")
    assert r.choice == "undecided" and r.arm is None and "no base arm" in r.reasons[0]
