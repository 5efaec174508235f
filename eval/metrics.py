"""SQuAD-style answer metrics (pure functions): exact match, token F1, reference contained.

Normalisation follows the SQuAD v1.1 evaluation script's rules: lowercase, drop punctuation,
drop the articles a/an/the, collapse whitespace. The best score over all references counts.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

# The normalisation and the containment rule live in the pipelines, which choose training targets by them.
from pipelines.matching import contains_reference, normalise_answer

__all__ = ["answer_scores", "contains_reference", "exact_match", "normalise_answer", "token_f1"]


def exact_match(prediction: str, references: Sequence[str]) -> float:
    p = normalise_answer(prediction)
    return float(any(p == normalise_answer(r) for r in references))


def token_f1(prediction: str, references: Sequence[str]) -> float:
    def f1(pred: str, ref: str) -> float:
        p, r = normalise_answer(pred).split(), normalise_answer(ref).split()
        common = sum((Counter(p) & Counter(r)).values())
        if not p or not r:
            return float(p == r)
        if common == 0:
            return 0.0
        precision, recall = common / len(p), common / len(r)
        return 2 * precision * recall / (precision + recall)

    return max((f1(prediction, r) for r in references), default=0.0)




def answer_scores(prediction: str, references: Sequence[str]) -> dict[str, float]:
    """The three SQuAD scores of one answer, as the evaluation stores them."""
    return {"exact_match": exact_match(prediction, references), "token_f1": token_f1(prediction, references),
            "contains": contains_reference(prediction, references)}
