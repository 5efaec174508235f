"""Leakage guard: classify every eval question against the training examples.

- verbatim: the same question after normalisation (case, punctuation, whitespace), or a
  training example that holds the eval question together with one of its answers. Training
  refuses to start unless leakage is explicitly allowed, and the fact is stored with the run.
- near-verbatim: high word 5-gram overlap with a training question. Warned.
- paraphrase ("same fact, other words"): high MiniLM cosine similarity, neither of the above.
  This is what closed-book knowledge injection is measured on, so it is reported as
  paraphrase coverage, not refused.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

_PUNCT = re.compile(r"[^\w\s]")
_SPACE = re.compile(r"\s+")


def normalise(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).lower()
    return _SPACE.sub(" ", _PUNCT.sub(" ", text)).strip()


def ngrams(text: str, n: int) -> set[tuple[str, ...]]:
    words = normalise(text).split()
    if len(words) < n:
        return {tuple(words)} if words else set()
    return {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}


def ngram_overlap(eval_q: str, train_q: str, n: int = 5) -> float:
    """Jaccard overlap of the two questions' word n-grams.

    Jaccard rather than containment: short questions share generic stems ("what is the name
    of the …"), and containment flagged those as near-copies on the demo corpus.
    """
    a, b = ngrams(eval_q, n), ngrams(train_q, n)
    return len(a & b) / len(a | b) if a else 0.0


@dataclass(frozen=True)
class Thresholds:
    near_verbatim_5gram: float = 0.5  # Jaccard of word 5-grams between eval and one training question
    paraphrase_cosine: float = 0.75  # MiniLM cosine between eval and training question


@dataclass
class Match:
    eval_id: str
    eval_question: str
    train_text: str
    score: float


@dataclass
class LeakageReport:
    n_eval: int
    n_train: int
    verbatim: list[Match] = field(default_factory=list)
    near_verbatim: list[Match] = field(default_factory=list)
    paraphrase: list[Match] = field(default_factory=list)
    thresholds: Thresholds = field(default_factory=Thresholds)

    @property
    def counts(self) -> dict[str, int]:
        return {"verbatim": len(self.verbatim), "near_verbatim": len(self.near_verbatim),
                "paraphrase": len(self.paraphrase), "unrelated": self.n_eval - len(self.verbatim)
                - len(self.near_verbatim) - len(self.paraphrase)}

    def summary(self) -> str:
        c = self.counts
        return (f"leakage guard over {self.n_eval} eval questions vs {self.n_train} training examples: "
                f"{c['verbatim']} verbatim, {c['near_verbatim']} near-verbatim, "
                f"{c['paraphrase']} paraphrase coverage, {c['unrelated']} not covered")

    def as_dict(self) -> dict[str, object]:
        def rows(ms: list[Match]) -> list[dict[str, object]]:
            return [{"eval_id": m.eval_id, "eval_question": m.eval_question, "train_text": m.train_text[:300],
                     "score": round(m.score, 3)} for m in ms]

        return {"counts": self.counts, "n_eval": self.n_eval, "n_train": self.n_train,
                "thresholds": vars(self.thresholds), "verbatim": rows(self.verbatim),
                "near_verbatim": rows(self.near_verbatim), "paraphrase": rows(self.paraphrase[:20])}


@dataclass(frozen=True)
class TrainText:
    """One training example as the guard sees it: its question (if any) and all of its text."""

    question: str | None
    text: str


def classify(
    eval_items: Sequence[tuple[str, str, Sequence[str]]],  # (id, question, answers)
    train: Sequence[TrainText],
    embed: Callable[[list[str]], np.ndarray],
    thresholds: Thresholds = Thresholds(),
) -> LeakageReport:
    """Each eval question lands in exactly one class (the most severe that applies)."""
    report = LeakageReport(len(eval_items), len(train), thresholds=thresholds)
    if not eval_items or not train:
        return report
    norm_train_q = {normalise(t.question): t for t in train if t.question}
    norm_train_text = [normalise(t.text) for t in train]
    train_questions = [t.question or t.text for t in train]
    eval_vecs = embed([q for _, q, _ in eval_items])
    train_vecs = embed(train_questions)
    sims = eval_vecs @ train_vecs.T  # embeddings are unit length
    for row, (qid, question, answers) in enumerate(eval_items):
        nq = normalise(question)
        if nq in norm_train_q:
            report.verbatim.append(Match(qid, question, norm_train_q[nq].text, 1.0))
            continue
        norm_answers = [normalise(a) for a in answers if normalise(a)]
        holder = next((i for i, t in enumerate(norm_train_text)
                       if nq and nq in t and any(a in t for a in norm_answers)), None)
        if holder is not None:
            report.verbatim.append(Match(qid, question, train[holder].text, 1.0))
            continue
        overlaps = [ngram_overlap(question, q) for q in train_questions]
        best = int(np.argmax(overlaps))
        if overlaps[best] >= thresholds.near_verbatim_5gram:
            report.near_verbatim.append(Match(qid, question, train[best].text, overlaps[best]))
            continue
        j = int(np.argmax(sims[row]))
        if sims[row, j] >= thresholds.paraphrase_cosine:
            report.paraphrase.append(Match(qid, question, train[j].text, float(sims[row, j])))
    return report
