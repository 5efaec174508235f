"""The arms: what each one is (`ARMS`, the one registry every other module asks) and how it
answers (`get_arm(name, ...).answer(question) -> Answer`).

The four local arms differ in exactly two ways (fairness): retrieved context in the prompt (rag,
ft_rag) and the LoRA delta in the weights (ft, ft_rag). Everything else is shared. The reference
arms (`api`, `api_rag`) are the one declared exception: another, hosted model behind an
OpenAI-compatible endpoint (pipelines/reference.py), asked the same way, shown beside the local
arms and never recommended in their place — they answer "is a hosted model worth its price?".
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

from pipelines import finetune, finetune_runs, generation, models, prompts, rag, reference, serving
from pipelines.config import Settings
from pipelines.corpus import Corpus
from pipelines.errors import InputError, UnknownNameError, option
from pipelines.prompts import CLOSED_BOOK_SYSTEM


@dataclass(frozen=True)
class Missing:
    """What an arm lacks before it can answer; `step` is the ragft step that provides it
    ("finetune" or "index"), so each front door can phrase the fix in its own words."""

    arm: str
    what: str
    step: str


@dataclass(frozen=True)
class Ready:
    arm: str


@dataclass(frozen=True)
class ArmKind:
    """One arm's identity: what it adds to the closed-book base model, and what the recommendation
    calls the choice of it."""

    name: str
    uses_retrieval: bool
    uses_finetune: bool
    verdict: str  # rag | fine-tune | both | neither | hosted
    hosted: bool = False  # a reference arm: another model on another endpoint, priced per token

    @property
    def counterpart(self) -> str | None:
        """The arm that differs from this one by the fine-tune alone (ft → base, ft_rag → rag)."""
        if not self.uses_finetune:
            return None
        return next(a.name for a in ARMS.values()
                    if not a.uses_finetune and not a.hosted and a.uses_retrieval == self.uses_retrieval)

    def one_off_s(self, index_s: float, finetune_s: float) -> float:
        """What the arm costs before its first answer: the index build and/or the fine-tune."""
        return (index_s if self.uses_retrieval else 0.0) + (finetune_s if self.uses_finetune else 0.0)

    def ready(self, settings: Settings, corpus: Corpus) -> Ready | Missing:
        if self.hosted and (lacking := [env for k, env in reference.SETTING_ENV.items() if not getattr(settings, k)]):
            return Missing(self.name, f"a reference endpoint ({', '.join(lacking)})", "reference")
        if self.uses_finetune and finetune_runs.latest_run(corpus.name, settings) is None:
            return Missing(self.name, f"a fine-tuned {settings.model} model of corpus '{corpus.name}'", "finetune")
        if self.uses_retrieval and rag.index_record(corpus, settings) is None:
            return Missing(self.name, f"the index of corpus '{corpus.name}'", "index")
        return Ready(self.name)


ARMS: dict[str, ArmKind] = {a.name: a for a in (
    ArmKind("base", uses_retrieval=False, uses_finetune=False, verdict="neither"),
    ArmKind("rag", uses_retrieval=True, uses_finetune=False, verdict="rag"),
    ArmKind("ft", uses_retrieval=False, uses_finetune=True, verdict="fine-tune"),
    ArmKind("ft_rag", uses_retrieval=True, uses_finetune=True, verdict="both"),
    ArmKind("api", uses_retrieval=False, uses_finetune=False, verdict="hosted", hosted=True),
    ArmKind("api_rag", uses_retrieval=True, uses_finetune=False, verdict="hosted", hosted=True),
)}
ARM_NAMES = tuple(ARMS)  # the order every table shows them in
LOCAL_ARMS = tuple(a.name for a in ARMS.values() if not a.hosted)  # one model, one server: what ragft recommends among
BASE = next(a.name for a in ARMS.values() if not (a.uses_retrieval or a.uses_finetune or a.hosted))  # what every arm must beat


def kind(name: str) -> ArmKind:
    return ARMS[check_arm_name(name)]


def ordered(names: Iterable[str]) -> list[str]:
    """Known arm names among `names`, in the registry's order."""
    chosen = set(names)
    return [a for a in ARM_NAMES if a in chosen]


def retrieval_arms(names: Iterable[str]) -> list[str]:
    return [a for a in ordered(names) if ARMS[a].uses_retrieval]


def finetuned_arms(names: Iterable[str]) -> list[str]:
    return [a for a in ordered(names) if ARMS[a].uses_finetune]


def hosted_arms(names: Iterable[str]) -> list[str]:
    return [a for a in ordered(names) if ARMS[a].hosted]


def local_arms(names: Iterable[str]) -> list[str]:
    return [a for a in ordered(names) if not ARMS[a].hosted]


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
    generation: generation.Generation
    passages: list[Passage] = field(default_factory=list)
    retrieval_ms: float = 0.0
    error: str | None = None  # the answer failed (a reference endpoint's timeout, 429 …): counted, scored as empty
    waits: list[str] = field(default_factory=list)  # rate-limit waits it took (events of the run)


class Arm(Protocol):
    name: str
    model: str

    def answer(self, question: str, on_token: Callable[[str], None] | None = None) -> Answer: ...


@dataclass
class ClosedBookArm:
    """Closed book: a served model (the base model or the fine-tune), no context."""

    settings: Settings
    server: serving.Server
    model: str
    name: str

    def answer(self, question: str, on_token: Callable[[str], None] | None = None) -> Answer:
        check_question(question, self.settings)
        gen = generation.generate(self.server, self.settings, self.model, question, CLOSED_BOOK_SYSTEM, on_token)
        return Answer(arm=self.name, question=question, text=gen.text.strip(), model=self.model, generation=gen)


@dataclass
class RetrievalArm:
    """A served model (base or fine-tune) + top-k retrieved passages in the prompt."""

    settings: Settings
    server: serving.Server
    model: str
    corpus: Corpus
    name: str

    def answer(self, question: str, on_token: Callable[[str], None] | None = None) -> Answer:
        check_question(question, self.settings)
        hits, retrieval_ms = rag.retrieve(self.corpus, question, self.settings)
        prompt = prompts.build_prompt(question, hits)
        gen = generation.generate(self.server, self.settings, self.model, prompt, prompts.RAG_SYSTEM, on_token)
        passages = [Passage(h.id, h.text, h.score, h.doc_id) for h in hits]
        return Answer(self.name, question, gen.text.strip(), self.model, gen, passages, retrieval_ms)


@dataclass
class ReferenceArm:
    """The hosted reference model: closed book, or the rag prompt with the same passages (api_rag)."""

    settings: Settings
    client: reference.ReferenceClient
    model: str
    corpus: Corpus | None
    name: str

    def answer(self, question: str, on_token: Callable[[str], None] | None = None) -> Answer:
        check_question(question, self.settings)
        hits, retrieval_ms = rag.retrieve(self.corpus, question, self.settings) if self.corpus else ([], 0.0)
        prompt, system = ((prompts.build_prompt(question, hits), prompts.RAG_SYSTEM) if self.corpus
                          else (question, CLOSED_BOOK_SYSTEM))
        done = self.client.complete(prompt, system, on_token)
        passages = [Passage(h.id, h.text, h.score, h.doc_id) for h in hits]
        return Answer(self.name, question, done.generation.text.strip(), self.model, done.generation, passages,
                      retrieval_ms, done.error, done.waits)


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


def get_arm(name: str, settings: Settings, server: serving.Server, corpus: Corpus | None = None,
            finetuned_on: Corpus | None = None) -> Arm:
    """The arm called `name`; unknown names list the known ones. `finetuned_on`: the corpus whose
    fine-tune the ft arms use, when it is not the one they retrieve from (the freshness test)."""
    arm = kind(name)
    if corpus is None and (arm.uses_retrieval or arm.uses_finetune):
        raise UnknownNameError(f"arm '{name}' needs a corpus", f"pass {option('corpus')} NAME (see `ragft corpus list`)")
    if arm.hosted:
        spec = reference.resolve(settings)
        return ReferenceArm(settings, reference.ReferenceClient(spec, settings), spec.model,
                            corpus if arm.uses_retrieval else None, name)
    tuned = finetuned_on or corpus
    model = (finetune.ensure_ft_model(tuned.name, settings, server) if arm.uses_finetune and tuned is not None
             else models.served_name(models.get_spec(settings.model, settings), settings))
    if arm.uses_retrieval and corpus is not None:
        return RetrievalArm(settings, server, model, corpus, name)
    return ClosedBookArm(settings, server, model, name)
