"""`raft-self`: raft's prompts, the target the base model's own answer wherever that answer is right.

After Yang et al. 2024 (self-distillation fine-tuning, SDFT): a fine-tune on targets written in
another voice moves the model's whole answer distribution toward that voice, and with it what the
model does on tasks the training never shows. raft's short references taught SmolLM2-135M to
answer in two committed words everywhere, and the forgetting probe lost 8 to 17 points with it
(README → Evaluation results). Here every training prompt is first answered by the base model
itself, in exactly the rag arm's prompt, on the same server, with the same decoding; where that
answer contains a reference answer (the evaluation's own "contains" rule) it becomes the target,
so those examples teach nothing but what the model already does. Only where the base model is
wrong (or reads no passage holding the answer) is the reference the target — the new knowledge.

`raft-sdft` goes one step further, as SDFT does: where the base model's own answer is wrong, it
is shown the reference answer after the same prompt and asked to answer in its own words; that
rewording becomes the target when it contains the reference and ended on its own, so the new facts
too are taught in the model's own voice. Only where the rewording fails is the bare reference
the target.

`replay` asks the other way round (after Huang et al. 2024, self-synthesized rehearsal): the
corpus's training questions closed book, in the base arm's prompt, the target whatever the base
model answers. It teaches nothing new; beside `raft` (`--recipe raft,replay`) it holds the
closed-book answers — the general knowledge the forgetting probe measures — where the base model
left them, while raft's examples move the rag prompt.

The base model's answers are appended to a cache as they arrive, keyed by model, decoding and
prompt: an interrupted or repeated fine-tune asks only what it has not asked yet.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from pipelines import files, generation, models, serving
from pipelines.config import Settings
from pipelines.corpus import Corpus
from pipelines.matching import contains_reference
from pipelines.prompts import CLOSED_BOOK_SYSTEM, RAG_SYSTEM
from pipelines.raft import RaftExample


@dataclass(frozen=True)
class OwnTargets:
    answers: list[str]  # one target per example, in order
    own: int  # examples whose target is the base model's own answer
    asked: int  # answers generated in this call
    seconds: float
    reused: int = 0  # answers taken from the cache
    rewritten: int = 0  # targets that are the base model's rewording of the reference (raft-sdft)
    rewrite: bool = False  # whether wrong answers were reworded (raft-sdft) or left to the reference (raft-self)

    def summary(self, recipe: str, model: str) -> str:
        n = len(self.answers)
        reworded = f", {self.rewritten} its rewording of the reference" if self.rewrite else ""
        return (f"{recipe}: {self.own} of {n} targets are {model}'s own right answers{reworded}, "
                f"{n - self.own - self.rewritten} the reference ({self.asked} asked, {self.reused} from cache, "
                f"{self.seconds:.0f} s)")


def pick_target(own: str, finished: bool, references: Sequence[str], reference: str) -> str:
    """The base model's answer when it is right and complete; else the reference.

    Its length is kept as it is: SmolLM2's rag answers run to a median of ~50 words, and that form
    is what the fine-tune should not move away from. An answer cut at max_tokens is not a target
    (it would teach stopping mid-sentence)."""
    own = own.strip()
    if finished and own and not models.looks_degenerate(own) and contains_reference(own, references):
        return own
    return reference


def rewrite_prompt(prompt: str, reference: str) -> str:
    """The rag prompt, then the reference answer the base model is to put in its own words (raft-sdft)."""
    return f"{prompt}\n\nThe correct answer is: {reference}\nAnswer the question in your own words, using this answer."


def _cache_path(corpus: Corpus, settings: Settings, model: str) -> Path:
    return settings.data_dir.expanduser() / "distill" / models.safe_name(corpus.name) / f"{files.safe_stem(model)}.jsonl"


def _key(model: str, settings: Settings, prompt: str, system: str = RAG_SYSTEM) -> str:
    ident = json.dumps([model, settings.decoding_options(), system, prompt], sort_keys=True)
    return hashlib.sha256(ident.encode()).hexdigest()[:24]


def _read_cache(path: Path) -> dict[str, dict[str, object]]:
    cached: dict[str, dict[str, object]] = {}
    with contextlib.suppress(OSError):
        for line in path.read_text(encoding="utf-8").splitlines():
            with contextlib.suppress(ValueError, KeyError, TypeError):  # a line cut by a kill is asked again
                row = json.loads(line)
                cached[str(row["key"])] = row
    return cached


class _BaseAnswers:
    """The base model's answers on the server, read from and appended to the corpus's cache as they arrive."""

    def __init__(self, corpus: Corpus, settings: Settings, server: serving.Server, log: Callable[[str], None]) -> None:
        self.settings, self.server = settings, server
        self.model = models.ensure_served(models.get_spec(settings.model, settings), settings, server, log)
        self.path = _cache_path(corpus, settings, self.model)
        self.cached = _read_cache(self.path)
        self.asked = self.reused = 0
        self.started = time.perf_counter()

    def __enter__(self) -> _BaseAnswers:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.sink = self.path.open("a", encoding="utf-8")
        return self

    def __exit__(self, *exc: object) -> None:
        self.sink.close()

    @property
    def seconds(self) -> float:
        return round(time.perf_counter() - self.started, 1)

    def ask(self, prompt: str, system: str = RAG_SYSTEM) -> tuple[str, bool]:
        """(text, ended on its own) for `prompt` under `system`, from the cache or the server."""
        key = _key(self.model, self.settings, prompt, system)
        if (row := self.cached.get(key)) is not None:
            self.reused += 1
        else:
            # A server that stays gone raises OllamaUnavailable; what was asked so far is in the cache.
            gen = generation.generate(self.server, self.settings, self.model, prompt, system)
            row = {"key": key, "text": gen.text, "finished": gen.done_reason == "stop"}
            self.sink.write(json.dumps(row, ensure_ascii=False) + "\n")
            self.sink.flush()
            self.cached[key] = row
            self.asked += 1
        return str(row["text"]), bool(row["finished"])


def own_targets(corpus: Corpus, examples: Sequence[RaftExample], settings: Settings, server: serving.Server,
                log: Callable[[str], None] = print, progress: Callable[[int, int], None] | None = None,
                rewrite: bool = False) -> OwnTargets:
    """A target per raft example: the base model's own answer to its prompt where right; with `rewrite`,
    else its rewording of the reference where that holds the reference; else the reference."""
    answers: list[str] = []
    own = rewritten = 0
    with _BaseAnswers(corpus, settings, server, log) as base:
        for i, ex in enumerate(examples, 1):
            text, finished = base.ask(ex.prompt)
            target = pick_target(text, finished, ex.references, ex.answer)
            if target == text.strip():
                own += 1
            elif rewrite:
                target = pick_target(*base.ask(rewrite_prompt(ex.prompt, ex.answer)), ex.references, ex.answer)
                rewritten += target != ex.answer
            answers.append(target)
            if progress:
                progress(i, len(examples))
    return OwnTargets(answers, own, base.asked, base.seconds, base.reused, rewritten, rewrite)


@dataclass(frozen=True)
class Replay:
    answers: list[str | None]  # the base model's closed-book answer per question; None where it is not a target
    asked: int
    reused: int
    seconds: float

    def summary(self, model: str) -> str:
        kept = sum(a is not None for a in self.answers)
        return (f"replay: {kept} of {len(self.answers)} training questions with {model}'s own closed-book answer as "
                f"the target, {len(self.answers) - kept} dropped (cut at max_tokens or degenerate) "
                f"({self.asked} asked, {self.reused} from cache, {self.seconds:.0f} s)")


def replay_targets(corpus: Corpus, questions: Sequence[str], settings: Settings, server: serving.Server,
                   log: Callable[[str], None] = print, progress: Callable[[int, int], None] | None = None) -> Replay:
    """The base model's own answer to each question in the closed-book arm's prompt (`replay`).

    Right or wrong, the answer is what the model already says closed book; training on it anchors
    that behaviour while the other recipe's examples teach the rag prompt. Answers cut at max_tokens
    or degenerate are no target (they would teach stopping mid-sentence or repeating)."""
    answers: list[str | None] = []
    with _BaseAnswers(corpus, settings, server, log) as base:
        for i, question in enumerate(questions, 1):
            text, finished = base.ask(question, CLOSED_BOOK_SYSTEM)
            text = text.strip()
            answers.append(text if finished and text and not models.looks_degenerate(text) else None)
            if progress:
                progress(i, len(questions))
    return Replay(answers, base.asked, base.reused, base.seconds)
