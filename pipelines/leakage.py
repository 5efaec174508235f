"""Leakage guard: classify every eval question against the training examples.

An eval item leaks only when training teaches *its* answer to *its* question, so every class
compares the question and the answer:

- verbatim: a training example asks the same question (after normalisation) and gives the
  same answer, or holds the eval question together with one of its answers in its text.
  Training refuses to start unless leakage is explicitly allowed; the fact is stored with the run.
- near-verbatim: a training question with high word 5-gram overlap whose answer gives the
  eval answer. Warned.
- paraphrase ("same fact, other words"): high MiniLM cosine similarity and the eval answer
  in the training example, neither of the above. This is what closed-book knowledge
  injection is measured on, so it is reported as paraphrase coverage, not refused.

Apart from these classes, every eval item gets a fact-level class: "taught" when a training
example about the same subject (a shared source document, or, where either side names none, a
MiniLM cosine ≥ 0.5 between the questions) gives its reference answer — whatever the question's
wording — else "not taught". Fine-tuning can only be expected to win closed book on taught facts,
so reports split every arm by it (eval/report.py).

Two questions that differ only in a symbol or one word ("R1 < 0" vs "R1 > 0", "Where" vs
"When") ask for different facts: with different answers they are not leakage.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

# Symbols carry meaning in questions ("R1 < 0", "5 %", "km/h", "C++", "3.5"), so only
# punctuation that does not change what is asked is dropped. Unicode symbols (category S:
# < > = + $ ° …) are always kept; these punctuation marks are kept too.
_KEEP_PUNCT = set("%&/#@")
TAUGHT, NOT_TAUGHT = "taught", "not_taught"
_DECIMAL = re.compile(r"(?<=\d)[.,](?=\d)")
_SPACE = re.compile(r"\s+")


def _keep(ch: str) -> bool:
    return not unicodedata.category(ch).startswith("P") or ch in _KEEP_PUNCT


def normalise(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).lower()
    protected = {m.start() for m in _DECIMAL.finditer(text)}  # 3.5 and 3,000 keep their separator
    text = "".join(ch if i in protected or _keep(ch) else " " for i, ch in enumerate(text))
    # symbols become words of their own, so "r1<0" and "r1 < 0" read the same
    text = "".join(f" {ch} " if unicodedata.category(ch).startswith("S") or ch in _KEEP_PUNCT else ch for ch in text)
    return _SPACE.sub(" ", text).strip()


def gives_answer(text: str, answers: Sequence[str]) -> bool:
    """Whether a training text gives one of the eval answers (whole words, either way round).

    SQuAD's annotators mark spans of different lengths for one fact ("1733" and "in 1733"),
    so an answer inside the other counts as the same answer.
    """
    return _gives(normalise(text), [normalise(a) for a in answers])


def _gives(norm_text: str, norm_answers: Sequence[str]) -> bool:
    """`gives_answer` on texts normalised already (the guard normalises each text once)."""
    t = f" {norm_text} "
    return any(na and (f" {na} " in t or (norm_text and f" {norm_text} " in f" {na} ")) for na in norm_answers)


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
    subject_cosine: float = 0.5  # same subject, for the fact class, when a side names no source document


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
    facts: dict[str, str] = field(default_factory=dict)  # eval id → "taught" | "not_taught", every eval item

    @property
    def counts(self) -> dict[str, int]:
        return {"verbatim": len(self.verbatim), "near_verbatim": len(self.near_verbatim),
                "paraphrase": len(self.paraphrase), "unrelated": self.n_eval - len(self.verbatim)
                - len(self.near_verbatim) - len(self.paraphrase)}

    @property
    def fact_counts(self) -> dict[str, int]:
        taught = sum(1 for v in self.facts.values() if v == TAUGHT)
        return {TAUGHT: taught, NOT_TAUGHT: len(self.facts) - taught}

    def summary(self) -> str:
        c, f = self.counts, self.fact_counts
        return (f"leakage guard over {self.n_eval} eval questions vs {self.n_train} training examples: "
                f"{c['verbatim']} verbatim, {c['near_verbatim']} near-verbatim, "
                f"{c['paraphrase']} paraphrase coverage, {c['unrelated']} not covered; "
                f"{f[TAUGHT]} eval facts taught by a training example on the same subject, {f[NOT_TAUGHT]} not")

    def as_dict(self) -> dict[str, object]:
        def rows(ms: list[Match]) -> list[dict[str, object]]:
            return [{"eval_id": m.eval_id, "eval_question": m.eval_question, "train_text": m.train_text[:300],
                     "score": round(m.score, 3)} for m in ms]

        return {"counts": self.counts, "n_eval": self.n_eval, "n_train": self.n_train,
                "thresholds": vars(self.thresholds), "verbatim": rows(self.verbatim),
                "near_verbatim": rows(self.near_verbatim), "paraphrase": rows(self.paraphrase),
                "fact_counts": self.fact_counts, "facts": self.facts}


@dataclass(frozen=True)
class TrainText:
    """One training example as the guard sees it: its question and answer (if any) and all of its text."""

    question: str | None
    text: str
    answer: str | None = None
    sources: tuple[str, ...] = ()  # the documents it was made from, when known


def classify(
    eval_items: Sequence[tuple[str, str, Sequence[str]]],  # (id, question, answers)
    train: Sequence[TrainText],
    embed: Callable[[list[str]], np.ndarray],
    thresholds: Thresholds = Thresholds(),
    eval_sources: Mapping[str, Sequence[str]] | None = None,  # eval id → its source documents
) -> LeakageReport:
    """Each eval question lands in exactly one class (the most severe that applies) and one fact class."""
    report = LeakageReport(len(eval_items), len(train), thresholds=thresholds)
    if not eval_items or not train:
        return report
    by_question: dict[str, list[int]] = {}
    for i, t in enumerate(train):
        if t.question:
            by_question.setdefault(normalise(t.question), []).append(i)
    norm_text = [normalise(t.text) for t in train]
    norm_answer = [normalise(t.answer) if t.answer is not None else norm_text[i] for i, t in enumerate(train)]
    train_questions = [t.question or t.text for t in train]
    eval_vecs = embed([q for _, q, _ in eval_items])
    train_vecs = embed(train_questions)
    sims = eval_vecs @ train_vecs.T  # embeddings are unit length
    for row, (qid, question, answers) in enumerate(eval_items):
        nq = normalise(question)
        nas = [normalise(a) for a in answers]
        sources = set((eval_sources or {}).get(qid, ()))
        report.facts[qid] = TAUGHT if any(
            _gives(norm_answer[i], nas) and (bool(sources & set(t.sources)) if sources and t.sources
                                             else sims[row, i] >= thresholds.subject_cosine)
            for i, t in enumerate(train)) else NOT_TAUGHT
        same = next((i for i in by_question.get(nq, []) if _gives(norm_answer[i], nas)), None)
        if same is not None:
            report.verbatim.append(Match(qid, question, train[same].text, 1.0))
            continue
        holder = next((i for i, t in enumerate(norm_text) if nq and f" {nq} " in f" {t} " and _gives(t, nas)), None)
        if holder is not None:
            report.verbatim.append(Match(qid, question, train[holder].text, 1.0))
            continue
        # Only training examples that give this item's answer can leak it.
        candidates = [i for i in range(len(train)) if _gives(norm_answer[i], nas)]
        overlaps = {i: ngram_overlap(question, train_questions[i]) for i in candidates}
        best = max(overlaps, key=overlaps.__getitem__, default=None)
        if best is not None and overlaps[best] >= thresholds.near_verbatim_5gram:
            report.near_verbatim.append(Match(qid, question, train[best].text, overlaps[best]))
            continue
        j = max(candidates, key=lambda i: sims[row, i], default=None)
        if j is not None and sims[row, j] >= thresholds.paraphrase_cosine:
            report.paraphrase.append(Match(qid, question, train[j].text, float(sims[row, j])))
    return report
