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
from pipelines.prompts import RAG_SYSTEM
from pipelines.raft import RaftExample


@dataclass(frozen=True)
class OwnTargets:
    answers: list[str]  # one target per example, in order
    own: int  # examples whose target is the base model's own answer
    asked: int  # answers generated in this call (the rest came from the cache)
    seconds: float

    def summary(self, model: str) -> str:
        n = len(self.answers)
        return (f"raft-self: {self.own} of {n} targets are {model}'s own right answers, {n - self.own} the reference "
                f"({self.asked} asked, {n - self.asked} from cache, {self.seconds:.0f} s)")


def pick_target(own: str, finished: bool, references: Sequence[str], reference: str) -> str:
    """The base model's answer when it is right and complete; else the reference.

    Its length is kept as it is: SmolLM2's rag answers run to a median of ~50 words, and that form
    is what the fine-tune should not move away from. An answer cut at max_tokens is not a target
    (it would teach stopping mid-sentence)."""
    own = own.strip()
    if finished and own and not models.looks_degenerate(own) and contains_reference(own, references):
        return own
    return reference


def _cache_path(corpus: Corpus, settings: Settings, model: str) -> Path:
    return settings.data_dir.expanduser() / "distill" / models.safe_name(corpus.name) / f"{files.safe_stem(model)}.jsonl"


def _key(model: str, settings: Settings, prompt: str) -> str:
    ident = json.dumps([model, settings.decoding_options(), RAG_SYSTEM, prompt], sort_keys=True)
    return hashlib.sha256(ident.encode()).hexdigest()[:24]


def _read_cache(path: Path) -> dict[str, dict[str, object]]:
    cached: dict[str, dict[str, object]] = {}
    with contextlib.suppress(OSError):
        for line in path.read_text(encoding="utf-8").splitlines():
            with contextlib.suppress(ValueError, KeyError, TypeError):  # a line cut by a kill is asked again
                row = json.loads(line)
                cached[str(row["key"])] = row
    return cached


def own_targets(corpus: Corpus, examples: Sequence[RaftExample], settings: Settings, server: serving.Server,
                log: Callable[[str], None] = print, progress: Callable[[int, int], None] | None = None) -> OwnTargets:
    """A target per raft example: the base model's own answer to its prompt where right, else its reference."""
    model = models.ensure_served(models.get_spec(settings.model, settings), settings, server, log)
    path = _cache_path(corpus, settings, model)
    cached = _read_cache(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    answers: list[str] = []
    own = asked = 0
    started = time.perf_counter()
    with path.open("a", encoding="utf-8") as sink:
        for i, ex in enumerate(examples, 1):
            key = _key(model, settings, ex.prompt)
            if (row := cached.get(key)) is None:
                # A server that stays gone raises OllamaUnavailable; what was asked so far is in the cache.
                gen = generation.generate(server, settings, model, ex.prompt, RAG_SYSTEM)
                row = {"key": key, "text": gen.text, "finished": gen.done_reason == "stop"}
                sink.write(json.dumps(row, ensure_ascii=False) + "\n")
                sink.flush()
                asked += 1
            target = pick_target(str(row["text"]), bool(row["finished"]), ex.references, ex.answer)
            own += target == str(row["text"]).strip()
            answers.append(target)
            if progress:
                progress(i, len(examples))
    return OwnTargets(answers, own, asked, round(time.perf_counter() - started, 1))
