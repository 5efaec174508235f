"""Statistics on constructed data with known answers."""

import numpy as np
import pytest

from eval.stats import bootstrap_ci, paired_compare


def test_bootstrap_ci_brackets_the_mean() -> None:
    est = bootstrap_ci([0.0, 1.0] * 50)
    assert est.mean == 0.5 and est.lo < 0.5 < est.hi and est.n == 100
    assert 0.38 < est.lo < 0.45 and 0.55 < est.hi < 0.62  # ≈ 0.5 ± 1.96·0.05


def test_constant_data_has_a_zero_width_interval() -> None:
    est = bootstrap_ci([0.7] * 20)
    assert est.lo == pytest.approx(0.7) and est.hi == pytest.approx(0.7)


def test_known_difference_is_significant() -> None:
    rng = np.random.default_rng(1)
    base = list((rng.random(60) < 0.2).astype(float))
    better = list((rng.random(60) < 0.8).astype(float))
    p = paired_compare("base", base, "ft", better, [x > 0 for x in base], [x > 0 for x in better])
    assert p.significant and p.diff.mean > 0.4 and p.p_bootstrap < 0.01 and p.p_mcnemar is not None and p.p_mcnemar < 0.01
    assert p.wins > p.losses


def test_identical_arms_are_not_different() -> None:
    x = [1.0, 0.0, 1.0, 1.0, 0.0] * 10
    p = paired_compare("a", x, "b", list(x), [v > 0 for v in x], [v > 0 for v in x])
    assert not p.significant and p.p_bootstrap == 1.0 and p.p_mcnemar == 1.0 and p.ties == 50


def test_agreement_and_cohens_kappa() -> None:
    from eval.stats import agreement

    a = [True, True, False, False, True, False, True, False, True, True]
    b = [True, False, False, False, True, True, True, False, True, True]
    r = agreement(a, b)
    # observed 0.8; expected 0.6·0.6 + 0.4·0.4 = 0.52 → κ = (0.8 − 0.52) / 0.48
    assert r.n == 10 and r.agreement == pytest.approx(0.8) and r.kappa == pytest.approx(0.28 / 0.48)
    assert agreement([True] * 4, [True] * 4).kappa is None  # one label throughout: κ undefined, not NaN
    assert agreement(a, [not x for x in a]).kappa == pytest.approx(-0.48 / 0.52)  # never agree
    with pytest.raises(ValueError):
        agreement([True], [True, False])
