"""The four arms behind one interface: `get_arm(name, ...).answer(question) -> Answer`.

Arms differ in exactly two ways (fairness): retrieved context in the prompt (rag, ft_rag)
and the LoRA delta in the weights (ft, ft_rag). Everything else is shared.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from pipelines import models, serving
from pipelines.config import Settings
from pipelines.corpus import Corpus
from pipelines.errors import InputError, UnknownNameError

ARM_NAMES = ("base", "rag", "ft", "ft_rag")

# Closed-book system prompt; the rag arms get their own (see rag.py) that adds the context.
CLOSED_BOOK_SYSTEM = "You are a helpful assistant. Answer the question briefly and factually."


@dataclass
class Passage:
    id: str
    text: str
    score: float
    source: str = ""


@dataclass
class Answer:
    arm: str
    question: str
    text: str
    model: str
    generation: serving.Generation
    passages: list[Passage] = field(default_factory=list)
    retrieval_ms: float = 0.0


class Arm(Protocol):
    name: str
    model: str

    def answer(self, question: str, on_token: Callable[[str], None] | None = None) -> Answer: ...


@dataclass
class BaseArm:
    """Closed book: the served base model, no context."""

    settings: Settings
    server: serving.Server
    model: str
    name: str = "base"

    def answer(self, question: str, on_token: Callable[[str], None] | None = None) -> Answer:
        check_question(question, self.settings)
        gen = serving.generate(self.server, self.settings, self.model, question, CLOSED_BOOK_SYSTEM, on_token)
        return Answer(arm=self.name, question=question, text=gen.text.strip(), model=self.model, generation=gen)


@dataclass
class RagArm:
    """Base model + top-k retrieved passages in the prompt."""

    settings: Settings
    server: serving.Server
    model: str
    corpus: Corpus
    name: str = "rag"

    def answer(self, question: str, on_token: Callable[[str], None] | None = None) -> Answer:
        from pipelines import rag

        check_question(question, self.settings)
        hits, retrieval_ms = rag.retrieve(self.corpus, question, self.settings)
        prompt = rag.build_prompt(question, hits)
        gen = serving.generate(self.server, self.settings, self.model, prompt, rag.RAG_SYSTEM, on_token)
        passages = [Passage(h.id, h.text, h.score, h.doc_id) for h in hits]
        return Answer(self.name, question, gen.text.strip(), self.model, gen, passages, retrieval_ms)


def check_question(question: str, settings: Settings) -> str:
    if not question.strip():
        raise InputError("the question is empty", "type a question")
    if len(question) > settings.max_question_chars:
        raise InputError(f"the question is {len(question):,} characters long, above the limit of "
                         f"{settings.max_question_chars:,}",
                         "ask a shorter question (put long text into a document of the corpus), "
                         "or raise RAGFT_MAX_QUESTION_CHARS")
    return question


def check_arm_name(name: str) -> str:
    if name not in ARM_NAMES:
        raise UnknownNameError(f"'{name}' is not a known arm", f"known arms: {', '.join(ARM_NAMES)}")
    return name


def get_arm(name: str, settings: Settings, server: serving.Server, corpus: Corpus | None = None) -> Arm:
    """The arm called `name`; unknown names list the known ones."""
    check_arm_name(name)
    spec = models.get_spec(settings.model, settings)
    if name == "base":
        return BaseArm(settings, server, models.served_name(spec, settings))
    if corpus is None and name != "base":
        raise UnknownNameError(f"arm '{name}' needs a corpus", "pass --corpus NAME (see `ragft corpus list`)")
    assert corpus is not None
    if name == "rag":
        return RagArm(settings, server, models.served_name(spec, settings), corpus)
    from pipelines.finetune import ensure_ft_model

    ft_model = ensure_ft_model(corpus.name, settings, server)
    if name == "ft":
        return BaseArm(settings, server, ft_model, name="ft")
    if name == "ft_rag":
        return RagArm(settings, server, ft_model, corpus, name="ft_rag")
    raise AssertionError(f"unhandled arm {name}")  # check_arm_name covers every name
