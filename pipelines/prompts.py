"""The two prompts every arm, the fine-tune recipes and the forgetting probe share.

One place, because fairness depends on it: a raft example must be trained on exactly the
prompt the rag arms answer from, and closed-book training on the closed-book arm's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

CLOSED_BOOK_SYSTEM = "You are a helpful assistant. Answer the question briefly and factually."

RAG_SYSTEM = (
    "You answer questions using only the numbered context passages. "
    "Answer briefly. If the passages do not contain the answer, say \"I don't know.\""
)


class Cited(Protocol):
    doc_id: str
    text: str


def build_prompt(question: str, hits: Sequence[Cited]) -> str:
    """Numbered passages with their sources, best one last, then the question.

    A 135M reader leans on what it read last: on 40 SQuAD questions (top-3 hybrid, SmolLM2)
    best-last answered 17 correctly against 15 for best-first.
    """
    blocks = [f"[{i}] (source: {h.doc_id})\n{h.text}" for i, h in enumerate(hits, 1)]
    return "Context:\n" + "\n\n".join(reversed(blocks)) + f"\n\nQuestion: {question}\nAnswer:"
