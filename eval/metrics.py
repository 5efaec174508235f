"""SQuAD-style answer metrics (pure functions): exact match, token F1, reference contained.

Normalisation follows the SQuAD v1.1 evaluation script's rules: lowercase, drop punctuation,
drop the articles a/an/the, collapse whitespace. The best score over all references counts.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Sequence

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = set(string.punctuation)


def normalise_answer(text: str) -> str:
    text = "".join(ch for ch in text.lower() if ch not in _PUNCT)
    return " ".join(_ARTICLES.sub(" ", text).split())


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


def contains_reference(prediction: str, references: Sequence[str]) -> float:
    """1 when a normalised reference answer appears inside the normalised prediction."""
    p = f" {normalise_answer(prediction)} "
    return float(any(f" {normalise_answer(r)} " in p for r in references if normalise_answer(r)))


def answer_scores(prediction: str, references: Sequence[str]) -> dict[str, float]:
    """The three SQuAD scores of one answer, as the evaluation stores them."""
    return {"exact_match": exact_match(prediction, references), "token_f1": token_f1(prediction, references),
            "contains": contains_reference(prediction, references)}
