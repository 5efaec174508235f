"""Whether an answer states a reference answer, by the SQuAD v1.1 evaluation script's normalisation.

Shared by the evaluation's scores (eval/metrics.py) and the recipes that pick a training target by
whether it is right (`raft-self`), so "right" means the same thing in training and in the report.
"""

from __future__ import annotations

import re
import string
from collections.abc import Sequence

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = set(string.punctuation)


def normalise_answer(text: str) -> str:
    """Lowercase, drop punctuation, drop the articles a/an/the, collapse whitespace."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCT)
    return " ".join(_ARTICLES.sub(" ", text).split())


def contains_reference(prediction: str, references: Sequence[str]) -> float:
    """1 when a normalised reference answer appears inside the normalised prediction."""
    p = f" {normalise_answer(prediction)} "
    return float(any(f" {normalise_answer(r)} " in p for r in references if normalise_answer(r)))
