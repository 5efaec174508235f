"""The fine-tuned arm: train a LoRA adapter on a recipe's items, merge it, serve it on Ollama.

A run lives in `<data dir>/finetune/<run id>/` (`finetune_runs`); its items come from a recipe
(`recipes`). The merged weights are served by the same Ollama as the base model, created with
the same quantisation, under a name that is never reused: `ragft-<base>-<corpus>-ft[-vN]`.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

from filelock import FileLock

from pipelines import corpus as corpora
from pipelines import files, generation, models, serving
from pipelines.config import Settings
from pipelines.corpus import Corpus
from pipelines.errors import ModelPrepError, option
from pipelines.finetune_runs import FinetuneRun, latest_run, load_run, make_run_dir, resume_dir, runs_dir, write_loss_plot
from pipelines.recipes import MIX_SHARE, SYNTHETIC_KINDS, TrainItem, build_items, check_leakage, mix_items, tokenize
from pipelines.train import LoraParams, TrainingError, merge_adapter, train_lora


def unused_model_name(server: serving.Server, settings: Settings, base: str) -> str:
    """`base`, or `base-v2`, `-v3`, … : an existing Ollama model is never overwritten."""
    existing = generation.served_models(server, settings)
    name, version = base, 1
    while f"{name}:{settings.quantization.lower()}" in existing:
        version += 1
        name = f"{base}-v{version}"
    return f"{name}:{settings.quantization.lower()}"


def finetune(
    corpus: Corpus,
    settings: Settings,
    server: serving.Server,
    recipes: list[str],
    params: LoraParams,
    allow_leakage: bool = False,
    resume_run: str | None = None,
    mix: Corpus | None = None,
    log: Callable[[str], None] = print,
    progress: Callable[[int, int, float], None] | None = None,
    stop_after_steps: int | None = None,
    stage: Callable[[str], None] = lambda _: None,
    started: Callable[[str], None] | None = None,
) -> FinetuneRun:
    """Recipes → leakage guard → LoRA → merge → `ollama create`; returns the stored run record.

    `stage` hears what happens before the first step ("checking leakage…"), for progress bars.
    `mix`: another corpus whose training questions are mixed in as reading examples (`mix_items`).
    `started` hears the run id as soon as the run folder exists (a background job records it).
    """
    spec = models.get_spec(settings.model, settings)
    base_dir = models.ensure_hf_weights(spec, settings, log)
    if resume_run:
        run_dir = resume_dir(resume_run, corpus, settings)
        record = load_run(run_dir)
        recipes, params = record["recipes"], LoraParams(**record["params"])
        if record.get("mix"):
            mix = corpora.load(record["mix"]["corpus"], settings)
    else:
        run_dir = make_run_dir(corpus, settings)
        record = FinetuneRun(run_id=run_dir.name, corpus=corpus.name, base_model=settings.model,
                             quantization=settings.quantization, recipes=recipes, params=asdict(params),
                             status="preparing", created=datetime.now(UTC).isoformat())
    files.write_json(run_dir / "run.json", record, indent=1)  # before anyone hears of the run: it can be read at once
    if started:
        started(run_dir.name)
    stage("building training data…")
    items = build_items(corpus, recipes, settings, server, log)
    if mix is not None:
        mixed = mix_items(mix, len(items), settings)
        record["mix"] = {"corpus": mix.name, "examples": len(mixed), "share": MIX_SHARE}
        log(f"mixing in {len(mixed)} reading examples from corpus '{mix.name}' (its training questions)")
        items += mixed
    stage("checking leakage…")
    items = _guard(corpus, items, run_dir, record, allow_leakage, log)

    from transformers import AutoTokenizer

    stage("tokenising…")
    examples = tokenize(items, AutoTokenizer.from_pretrained(base_dir), params.max_length)
    record["status"], record["n_items"], record["n_examples"] = "training", len(items), len(examples)
    files.write_json(run_dir / "run.json", record, indent=1)
    log(f"training LoRA on {len(examples)} examples ({', '.join(recipes)}) → {run_dir}")
    stage("loading model…" if not resume_run else "loading checkpoint…")
    result = train_lora(base_dir, examples, params, run_dir, settings.num_threads, resume=bool(resume_run),
                        progress=progress, stop_after_steps=stop_after_steps,
                        device_request=settings.train_device)
    if result["status"] == "interrupted":
        record["status"] = "interrupted"
        files.write_json(run_dir / "run.json", record, indent=1)
        return record
    record["training"] = result
    record["status"] = "trained"
    write_loss_plot(run_dir)
    files.write_json(run_dir / "run.json", record, indent=1)
    stage("merging and serving…")
    record.update(export(run_dir, record, settings, server, log))  # status, ollama_model, export_s
    files.write_json(run_dir / "run.json", record, indent=1)
    return record


def _guard(corpus: Corpus, items: list[TrainItem], run_dir: Path, record: FinetuneRun, allow_leakage: bool,
           log: Callable[[str], None]) -> list[TrainItem]:
    """The leakage guard over the training items: its report is written and put on the record; an eval
    question verbatim in the training data refuses the run unless the user allows it."""
    report = check_leakage(corpus, items)
    # A teacher that never saw the eval questions can still write one of them (on the demo corpus
    # it wrote 3 of 53 word for word): such a pair is dropped, not trained on and not a reason to
    # refuse — the documents-only track measures what the documents teach, not recall of an answer.
    repeats = {m.train_text for m in report.verbatim + report.near_verbatim}
    dropped = [it for it in items if it.kind in SYNTHETIC_KINDS and it.guard_text().text in repeats]
    if dropped:
        items = [it for it in items if not (it.kind in SYNTHETIC_KINDS and it.guard_text().text in repeats)]
        log(f"dropped {len(dropped)} teacher-written pair(s) that repeat an eval question (verbatim or near-verbatim)")
        report = check_leakage(corpus, items)
    record["teacher_repeats_dropped"] = len(dropped)
    files.write_json(run_dir / "leakage.json", report.as_dict(), indent=1)
    record["leakage"] = report.counts
    record["fact_coverage"] = report.fact_counts
    record["allow_leakage"] = allow_leakage
    log(report.summary())
    for m in report.verbatim[:3]:
        log(f"  verbatim: eval {m.eval_id} '{m.eval_question}' ↔ '{m.train_text[:80]}'")
    for m in report.near_verbatim[:3]:
        log(f"  near-verbatim ({m.score:.2f}): eval {m.eval_id} '{m.eval_question}' ↔ '{m.train_text[:80]}'")
    if report.verbatim and not allow_leakage:
        record["status"] = "refused: leakage"
        files.write_json(run_dir / "run.json", record, indent=1)
        raise TrainingError(f"{len(report.verbatim)} eval question(s) appear verbatim in the training data "
                            f"(see {run_dir / 'leakage.json'})",
                            f"remove them from the training data, or pass {option('allow_leakage')} (the run will say so)")
    return items


def export(run_dir: Path, record: FinetuneRun, settings: Settings, server: serving.Server,
           log: Callable[[str], None] = print) -> FinetuneRun:
    """Merge the adapter into the base weights and create the served model (same quantisation)."""
    spec = models.get_spec(record["base_model"], settings)
    base_dir = models.ensure_hf_weights(spec, settings, log)
    started = time.perf_counter()
    merged = merge_adapter(base_dir, run_dir / "adapter", run_dir / "merged")
    models.add_legacy_rope_keys(merged / "config.json")
    # Choosing an unused name and creating it is one step across processes: two fine-tunes of one
    # corpus finishing together would otherwise both pick the same free name, and the second
    # `ollama create` would overwrite the first's model.
    with FileLock(str(files.ensure_dir(settings.data_dir / "locks") / "ollama-create.lock")):
        name = record.get("ollama_model") or unused_model_name(
            server, settings, f"ragft-{spec.name}-{models.safe_name(record['corpus'])}-ft")
        models.create_checked(server, settings, name, models.modelfile(spec, merged), log)
    shutil.rmtree(merged, ignore_errors=True)  # the adapter is kept; merging again takes seconds
    log(f"served as {name} ({time.perf_counter() - started:.0f} s to merge and create)")
    return FinetuneRun(status="served", ollama_model=name, export_s=round(time.perf_counter() - started, 1))


def ensure_ft_model(corpus_name: str, settings: Settings, server: serving.Server) -> str:
    """The newest fine-tuned model for (corpus, base model), recreated on this server if missing."""
    run = latest_run(corpus_name, settings)
    if run is None:
        raise ModelPrepError(f"no fine-tuned {settings.model} model for corpus '{corpus_name}'",
                             f"run `ragft finetune {corpus_name}` first")
    if not generation.has_model(server, settings, run["ollama_model"]):
        export(runs_dir(settings) / run["run_id"], run, settings, server)
    return str(run["ollama_model"])
