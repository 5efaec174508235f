"""Statistics on per-question scores (pure functions): bootstrap CIs, paired tests, win/loss."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats as sps


@dataclass
class Estimate:
    mean: float
    lo: float
    hi: float
    n: int


def bootstrap_ci(values: list[float], n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> Estimate:
    """Mean with a percentile bootstrap CI; NaN-free input expected (failures are counted elsewhere)."""
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        return Estimate(float("nan"), float("nan"), float("nan"), 0)
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, (n_boot, x.size))].mean(axis=1)
    a = (1 - level) / 2
    return Estimate(float(x.mean()), float(np.quantile(means, a)), float(np.quantile(means, 1 - a)), int(x.size))


@dataclass
class Paired:
    a: str
    b: str
    diff: Estimate  # mean of (b - a) per question
    p_bootstrap: float
    wins: int  # b better than a
    losses: int
    ties: int
    p_mcnemar: float | None  # on correct-or-not, when given

    @property
    def significant(self) -> bool:
        return self.diff.lo > 0 or self.diff.hi < 0


def paired_compare(a_name: str, a: list[float], b_name: str, b: list[float], a_correct: list[bool] | None = None,
                   b_correct: list[bool] | None = None, n_boot: int = 2000, seed: int = 0) -> Paired:
    """Paired bootstrap of the per-question difference b − a, plus McNemar's exact test on correctness."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    d = y - x
    est = bootstrap_ci(list(d), n_boot, seed)
    rng = np.random.default_rng(seed)
    boots = d[rng.integers(0, d.size, (n_boot, d.size))].mean(axis=1) if d.size else np.array([0.0])
    # two-sided: how often the resampled mean falls on the other side of zero
    p = float(min(1.0, 2 * min((boots <= 0).mean(), (boots >= 0).mean()))) if d.size and d.any() else 1.0
    p_mc = None
    if a_correct is not None and b_correct is not None:
        only_b = sum(1 for ac, bc in zip(a_correct, b_correct, strict=True) if bc and not ac)
        only_a = sum(1 for ac, bc in zip(a_correct, b_correct, strict=True) if ac and not bc)
        p_mc = float(sps.binomtest(only_b, only_b + only_a, 0.5).pvalue) if only_a + only_b else 1.0
    return Paired(a_name, b_name, est, p, int((d > 0).sum()), int((d < 0).sum()), int((d == 0).sum()), p_mc)


@dataclass
class Agreement:
    n: int
    agreement: float  # share of items both raters label alike
    kappa: float | None  # Cohen's κ; None when it is undefined (one rater gave a single label throughout)
    positive_a: int
    positive_b: int


def agreement(a: list[bool], b: list[bool]) -> Agreement:
    """Percent agreement and Cohen's κ of two binary raters on the same items."""
    from sklearn.metrics import cohen_kappa_score

    if len(a) != len(b):
        raise ValueError(f"raters labelled {len(a)} and {len(b)} items")
    if not a:
        return Agreement(0, float("nan"), None, 0, 0)
    same = sum(x == y for x, y in zip(a, b, strict=True))
    # κ is 0/0 when both raters use one label only; sklearn then warns and returns NaN
    kappa = float(cohen_kappa_score(a, b)) if len(set(a) | set(b)) > 1 and len(set(a)) > 1 and len(set(b)) > 1 else None
    return Agreement(len(a), same / len(a), kappa, sum(a), sum(b))
