"""The core's services: what both front doors do, each with a typed spec.

The CLI builds a spec from its flags and calls the service; the app builds the same spec from its
widgets and runs the service in a background job (`ui/jobs.py` starts `python -m eval.services
KIND SPEC RESULT`). A service reports the id of what it produces (an eval run, a fine-tune run) the
moment it is known, and the job records it: neither door hands flag strings to the core, and no
page guesses which run a job made.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from eval import freshness as freshness_mod
from eval.history import one_off_seconds
from eval.metrics import answer_scores
from eval.recommend import Needs
from eval.records import Summary
from eval.report import summarise, write_outputs
from eval.runner import EvalConfig, run_eval
from eval.store import Store
from pipelines import corpus as corpora
from pipelines import files, models, ollama_build, rag, serving
from pipelines import finetune as ft
from pipelines import recipes as training_recipes
from pipelines.arms import LOCAL_ARMS, Answer, check_arm_name, check_question, get_arm
from pipelines.config import Settings, load_settings
from pipelines.corpus import Corpus
from pipelines.errors import CorpusError, RagftError, option
from pipelines.finetune_runs import FinetuneRun
from pipelines.train import LoraParams

Log = Callable[[str], None]
Produced = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


# ---------------------------------------------------------------- specs


@dataclass
class SetupSpec:
    """Ollama found or built, its server up, the base model served (the model is the settings')."""


@dataclass
class ServeSpec:
    """The Ollama server for this data dir, started or reused."""


@dataclass
class IndexSpec:
    corpus: str
    rebuild: bool = False  # move a damaged index store aside (kept) and build afresh


@dataclass
class FinetuneSpec:
    corpus: str
    recipes: list[str] | None = None  # None: the corpus's default (raft,replay with an index and questions, else qa)
    teacher: str | None = None  # writes the synthetic recipes' pairs (None: the settings' teacher_model)
    mix: str | None = None  # another corpus whose training questions are mixed in as reading examples
    epochs: int | None = None  # None: the recipes' default (recipes.recipe_defaults)
    lr: float = 1e-3
    r: int = 32
    alpha: int = 64
    dropout: float = 0.05
    target_modules: str | list[str] = "all-linear"
    batch_size: int | None = None
    grad_accum: int = 1
    max_length: int | None = None
    checkpoint_every: int = 20
    gradient_checkpointing: bool | None = None
    seed: int = 42
    allow_leakage: bool = False
    resume: str | None = None  # run id of an interrupted run to continue (its own recipes and parameters)

    def params(self, recipes: list[str]) -> LoraParams:
        defaults = training_recipes.recipe_defaults(recipes)
        return LoraParams(r=self.r, alpha=self.alpha, dropout=self.dropout, target_modules=self.target_modules,  # type: ignore[arg-type]
                          epochs=self.epochs or defaults["epochs"], lr=self.lr,
                          max_length=self.max_length or defaults["max_length"],
                          batch_size=self.batch_size or defaults["batch_size"], grad_accum=self.grad_accum,
                          seed=self.seed, checkpoint_every=self.checkpoint_every,
                          gradient_checkpointing=self.gradient_checkpointing)


@dataclass
class EvalSpec:
    corpus: str
    arms: list[str] = field(default_factory=lambda: list(LOCAL_ARMS))
    limit: int | None = None  # a seeded sample of this many eval questions
    seed: int = 42
    judge: str | None = None
    concurrency: int = 1
    rerun: bool = False  # answer everything again (the database is backed up first)
    out: str | None = None  # folder for report.html and the CSVs; None: <data dir>/reports/<corpus>
    price_per_hour: float = 0.10
    docs_change_often: bool = False
    need_citations: bool = False
    latency_budget_ms: float | None = None
    offline: bool = False
    accept_loss: float = 5.0  # points a cheaper arm may lose against the best one (paired 95% CI)

    def needs(self) -> Needs:
        return Needs(self.docs_change_often, self.need_citations, self.latency_budget_ms, self.offline,
                     self.accept_loss / 100)


# ---------------------------------------------------------------- services


@dataclass
class Setup:
    binary: ollama_build.OllamaBinary
    server: serving.Server
    model: str  # the served base model
    spec: models.ModelSpec


def setup(settings: Settings, log: Log = _quiet) -> Setup:
    binary = ollama_build.ensure_binary(settings, log)
    server = serving.ensure_server(settings, log)
    spec = models.get_spec(settings.model, settings)
    return Setup(binary, server, models.ensure_served(spec, settings, server, log), spec)


def serve(settings: Settings, log: Log = _quiet) -> serving.Server:
    return serving.ensure_server(settings, log)


@dataclass
class Asked:
    answer: Answer
    scores: dict[str, float] | None  # against the reference answers given (a question of the eval or train set)


def ask(question: str, arm: str, settings: Settings, corpus: Corpus | str | None = None,
        server: serving.Server | None = None, on_token: Log | None = None, reference: list[str] | None = None,
        log: Log = _quiet) -> Asked:
    """One question through one arm (streamed to `on_token`), scored when its reference is known."""
    check_arm_name(arm)
    check_question(question, settings)  # before any server starts
    models.get_spec(settings.model, settings)  # a bad model name fails before anything starts
    loaded = corpora.load(corpus, settings) if isinstance(corpus, str) else corpus
    server = server or serving.ensure_server(settings, log)
    answer = get_arm(arm, settings, server, loaded).answer(question, on_token=on_token)
    return Asked(answer, answer_scores(answer.text, reference) if reference else None)


@dataclass
class Indexed:
    report: rag.IndexReport
    moved_aside: Path | None  # where a damaged store went (`rebuild`)


def index(spec: IndexSpec, settings: Settings, progress: rag.Progress | None = None) -> Indexed:
    loaded = corpora.load(spec.corpus, settings)
    moved = rag.move_store_aside(settings) if spec.rebuild else None
    return Indexed(rag.build_index(loaded, settings, progress), moved)


def finetune(spec: FinetuneSpec, settings: Settings, log: Log = print,
             progress: Callable[[int, int, float], None] | None = None, stage: Log = _quiet,
             started: Produced | None = None) -> FinetuneRun:
    """Fine-tune, merge and serve; returns the run record (`started` hears the run id first)."""
    if spec.teacher:
        settings = settings.model_copy(update={"teacher_model": spec.teacher})
    loaded = corpora.load(spec.corpus, settings)
    mixed = corpora.load(spec.mix, settings) if spec.mix else None
    if mixed is not None and mixed.name == loaded.name:
        raise CorpusError(f"{option('mix')} {spec.mix} is the corpus being fine-tuned", "mix in a different corpus")
    recipes = spec.recipes or training_recipes.default_recipes(loaded, settings)
    training_recipes.parse_recipes(",".join(recipes))  # an unknown recipe fails here, naming the known ones
    params = spec.params(recipes)
    params.validate()
    server = serving.ensure_server(settings, log)
    models.ensure_served(models.get_spec(settings.model, settings), settings, server, log)
    return ft.finetune(loaded, settings, server, recipes, params, spec.allow_leakage, spec.resume, mix=mixed, log=log,
                       progress=progress, stage=stage, started=started)


@dataclass
class Evaluation:
    run_id: str
    summary: Summary
    outputs: dict[str, Path]  # report.html, answers.csv, scores.csv, summary.json


def report_dir(spec: EvalSpec, settings: Settings) -> Path:
    return Path(spec.out) if spec.out else settings.data_dir.expanduser() / "reports" / spec.corpus


def evaluate(spec: EvalSpec, settings: Settings, log: Log = print,
             progress: Callable[[int, int, str], None] | None = None, started: Produced | None = None) -> Evaluation:
    """Answer (or resume), score, summarise and write the report of one evaluation run."""
    loaded = corpora.load(spec.corpus, settings)
    store = Store(settings.runs_db)
    try:
        cfg = EvalConfig(list(spec.arms), spec.limit, spec.seed, spec.concurrency, spec.judge)
        run_id = run_eval(loaded, cfg, settings, store, progress, log=log, rerun=spec.rerun, started=started)
        summary = summarise(store, run_id, spec.price_per_hour, spec.needs(), one_off_seconds(loaded, settings))
        summary["freshness"] = freshness_mod.latest(loaded.name, settings)
        return Evaluation(run_id, summary, write_outputs(store, run_id, summary, report_dir(spec, settings)))
    finally:
        store.close()


def summary(run_id: str, settings: Settings, store: Store, price_per_hour: float = 0.10,
            needs: Needs | None = None) -> Summary:
    """A stored run's summary with its arms' one-off costs (none when its corpus is gone)."""
    try:
        one_off = one_off_seconds(corpora.load(store.run(run_id)["corpus"], settings), settings)
    except RagftError:
        one_off = {}
    summarised = summarise(store, run_id, price_per_hour, needs, one_off)
    summarised["freshness"] = freshness_mod.latest(summarised["corpus"], settings)
    return summarised


def report(run_id: str, settings: Settings, out: Path, price_per_hour: float = 0.10, needs: Needs | None = None
           ) -> Evaluation:
    """Write a stored run's report again; no model is called."""
    store = Store(settings.runs_db)
    try:
        summarised = summary(run_id, settings, store, price_per_hour, needs)
        return Evaluation(run_id, summarised, write_outputs(store, run_id, summarised, out))
    finally:
        store.close()


@dataclass
class FreshnessSpec:
    corpus: str
    facts: int = 20  # eval facts to edit
    seed: int = 42
    arms: list[str] = field(default_factory=lambda: list(LOCAL_ARMS))
    retrain: bool = True  # also fine-tune on the edited documents and ask the ft arms again
    recipes: list[str] | None = None  # documents-only recipe of that fine-tune (None: synthetic)
    teacher: str | None = None  # writes its pairs (None: the settings' teacher_model)
    price_per_hour: float = 0.10


def freshness(spec: FreshnessSpec, settings: Settings, log: Log = print, started: Produced | None = None) -> dict[str, Any]:
    """Edit facts in a copy of the corpus, ask every arm, measure the catch-up (eval/freshness.py)."""
    if spec.facts < 1:
        raise RagftError(f"{option('facts')} {spec.facts} edits nothing", "edit at least 1 fact (20 or more for a CI)")
    if spec.teacher:
        settings = settings.model_copy(update={"teacher_model": spec.teacher})
    recipes = spec.recipes or ["synthetic"]
    training_recipes.parse_recipes(",".join(recipes))
    if any(r in ("qa", *training_recipes.QUESTION_RAFT) for r in recipes):
        raise RagftError(f"recipe {','.join(recipes)} trains on the corpus's questions, which a changed document "
                         "does not change", "use a documents-only recipe: synthetic, synthetic-raft or docs")
    return freshness_mod.run_freshness(corpora.load(spec.corpus, settings), settings, spec.facts, spec.seed,
                                       list(spec.arms), spec.retrain, recipes, None, spec.price_per_hour, log, started)


# ---------------------------------------------------------------- background jobs

SPECS: dict[str, type] = {"setup": SetupSpec, "serve": ServeSpec, "index": IndexSpec, "finetune": FinetuneSpec,
                          "evaluate": EvalSpec, "freshness": FreshnessSpec}


def spec_from(kind: str, data: dict[str, Any]) -> Any:
    """The typed spec of a job's stored JSON; an unknown field or kind is an error, not ignored."""
    if kind not in SPECS:
        raise RagftError(f"'{kind}' is not a ragft service", f"known: {', '.join(SPECS)}")
    known = {f.name for f in fields(SPECS[kind])}
    if unknown := sorted(set(data) - known):
        raise RagftError(f"{kind} spec has unknown fields: {', '.join(unknown)}", f"known: {', '.join(sorted(known))}")
    return SPECS[kind](**data)


def run(kind: str, spec: Any, settings: Settings, log: Log = print, produced: Produced | None = None) -> None:
    """Run one service as a job does: its lines go to the job's log, its product's id to `produced`."""
    if kind == "setup":
        done = setup(settings, log)
        log(f"ready: base model {done.model} on {done.server.url} (Ollama {done.binary.version})")
    elif kind == "serve":
        server = serve(settings, log)
        log(f"{server.url} (version {server.version}, pid {server.pid or 'not ragft-owned'})")
    elif kind == "index":
        indexed = index(spec, settings)
        r = indexed.report
        for problem in r.problems:
            log(f"warning: {problem}")
        log(f"index {r.collection}: {len(r.added)} added, {len(r.changed)} changed, {len(r.removed)} removed, "
            f"{r.unchanged} unchanged docs; {r.chunks_embedded} chunks embedded, {r.chunks_total} in the index")
    elif kind == "finetune":
        record = finetune(spec, settings, log, started=produced)
        log(f"done: run {record['run_id']} → {record.get('ollama_model')} ({record.get('status')})")
    elif kind == "evaluate":
        result = evaluate(spec, settings, log, started=produced)
        log(f"done: run {result.run_id}; recommendation {result.summary['recommendation']['choice']}; "
            f"report {result.outputs['report.html']}")
    elif kind == "freshness":
        fresh = freshness(spec, settings, log, started=produced)
        log(f"done: freshness test {fresh['id']} ({fresh['n_edits']} facts edited)")


def main(argv: list[str]) -> int:
    """`python -m eval.services KIND SPEC_JSON RESULT_FILE`: what a background job runs."""
    kind, spec_json, result_file = argv
    try:
        spec = spec_from(kind, json.loads(spec_json))
        run(kind, spec, load_settings(), lambda m: print(m, flush=True),
            lambda produced: files.write_json(Path(result_file), {"produced": produced}))
    except RagftError as exc:
        print(f"error: {exc}", flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
