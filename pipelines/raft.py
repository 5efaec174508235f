"""The `raft` recipe: fine-tune on the prompt the rag arms answer from (after Zhang et al. 2024, RAFT).

Each training question is shown with k passages from the corpus's own index, in exactly the
format `prompts.build_prompt` gives the rag and ft_rag arms at answer time, under the same system
prompt. For a share P of the questions (default 0.8) the passage that holds the answer is among
them, next to distractors; for the rest only distractors are shown. The target is the short
reference answer either way, so the model learns to read the answer when it is in front of it
and to fall back on what it learned when it is not — instead of unlearning to read, which is
what closed-book `qa` training did to ft_rag (README → Evaluation results).

`raft-quote` trains the same prompts with a different target: the sentence of the corpus that
holds the answer, quoted (RAFT's answers quote the passage too). Short targets teach a small
model to answer in two or three committed words everywhere, closed book included; a sentence is
the form its base model already answers in (README → forgetting probe).

Why these defaults: the RAFT paper found that leaving the oracle passage out of a share of the
examples helped in-domain RAG, with the best share varying by dataset; 0.8 is within its good
range and ragft has not tuned it. k equals the rag arm's top_k, so the prompt length and the
passage positions trained on are the ones answered from.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pipelines.corpus import QA
from pipelines.prompts import build_prompt
from pipelines.rag import Hit

DEFAULT_SHARE = 0.8
ANSWER_FORMS = ("short", "quote")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


@dataclass(frozen=True)
class RaftExample:
    question: str
    prompt: str  # prompts.build_prompt(question, passages): the rag arm's user turn
    answer: str
    gold_shown: bool
    passages: tuple[str, ...]  # chunk ids, in retrieval order
    sources: tuple[str, ...] = ()  # the training question's own source documents
    references: tuple[str, ...] = ()  # every reference answer of the training question


def holds_answer(hit: Hit, qa: QA) -> bool:
    """A chunk holds the answer when one of the reference answers appears in it (case-insensitive)."""
    text = hit.text.lower()
    return any(a.strip() and a.strip().lower() in text for a in qa.answers)


def quote(text: str, answers: Sequence[str]) -> str | None:
    """The first sentence of `text` that holds one of the reference answers (case-insensitive)."""
    wanted = [a.strip().lower() for a in answers if a.strip()]
    for sentence in _SENTENCE_END.split(" ".join(text.split())):
        if any(a in sentence.lower() for a in wanted):
            return sentence.strip()
    return None


def raft_examples(train: Sequence[QA], retrieve: Callable[[str, int], list[Hit]], k: int,
                  share: float = DEFAULT_SHARE, seed: int = 42, answer_form: str = "short") -> list[RaftExample]:
    """One example per training question; `retrieve(question, n)` returns the index's top-n chunks.

    With the gold passage: the top-k as retrieved, the best-ranked chunk holding the answer
    swapped in for the k-th when retrieval missed it. Without: the k best chunks that do not
    hold the answer. A question whose answer no chunk holds (among a wider pool) is shown
    without it — it is still a question the model should answer from memory.

    answer_form "quote": the target is the sentence of the best-ranked chunk holding the answer
    (shown or not — without it, the model is to state it from memory), else the corpus's own
    answer sentence, else the short reference.
    """
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"raft share {share} is outside [0, 1]")
    if answer_form not in ANSWER_FORMS:
        raise ValueError(f"raft answer form {answer_form!r} is not one of {', '.join(ANSWER_FORMS)}")
    rng = random.Random(seed)
    out: list[RaftExample] = []
    for qa in train:
        pool = retrieve(qa.question, max(4 * k, 12))
        gold = [h for h in pool if holds_answer(h, qa)]
        distractors = [h for h in pool if not holds_answer(h, qa)]
        show_gold = bool(gold) and rng.random() < share
        if show_gold:
            top = pool[:k]
            if not any(holds_answer(h, qa) for h in top):
                top = [*top[:k - 1], gold[0]]
            hits = top
        else:
            hits = distractors[:k]
        answer = qa.answers[0] if qa.answers else ""
        if answer and answer_form == "quote":
            answer = next((s for h in gold if (s := quote(h.text, qa.answers))), None) or qa.answer_sentence or answer
        if not hits or not answer:
            continue
        out.append(RaftExample(qa.question, build_prompt(qa.question, hits), answer, show_gold,
                               tuple(h.id for h in hits), tuple(qa.source_ids), tuple(qa.answers)))
    return out
