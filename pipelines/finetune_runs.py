"""Fine-tune runs on disk: `<data dir>/finetune/<run id>/` with run.json, leakage.json, loss.jsonl,
checkpoint/ and adapter/ — finding, resuming and reading them, and their loss curve.

Everything here reads what a run persisted as it went, so the app and the CLI show the same
progress for a run in this process, in a background job, or one that was killed.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypedDict

from pipelines import models
from pipelines.config import Settings
from pipelines.corpus import Corpus
from pipelines.train import TrainingError


class FinetuneRun(TypedDict, total=False):
    """run.json: a fine-tune run's record, written as the run goes (so every key past `status` is optional)."""

    run_id: str
    corpus: str
    base_model: str
    quantization: str
    recipes: list[str]
    params: dict[str, Any]  # train.LoraParams as a dict
    status: str  # preparing | refused: leakage | training | interrupted | trained | served
    created: str  # ISO 8601, UTC
    mix: dict[str, Any]  # the corpus mixed in: name, examples, share
    teacher_repeats_dropped: int
    leakage: dict[str, int]  # verbatim / near_verbatim / paraphrase / unrelated counts
    fact_coverage: dict[str, int]  # taught / not taught eval facts
    allow_leakage: bool
    n_items: int
    n_examples: int
    training: dict[str, Any]  # what train_lora measured: steps, tokens, wall s, tok/s, peak RSS, loss
    ollama_model: str
    export_s: float




def runs_dir(settings: Settings) -> Path:
    return settings.data_dir.expanduser() / "finetune"


def new_run_id(corpus: Corpus, settings: Settings) -> str:
    return f"{datetime.now(UTC).strftime('%Y%m%dT%H%M%S')}-{models.safe_name(corpus.name)}-{settings.model}"


def make_run_dir(corpus: Corpus, settings: Settings) -> Path:
    """A new run folder, claimed atomically: two fine-tunes started in the same second (two tabs)
    get `…` and `…-2`, never one folder."""
    base = runs_dir(settings) / new_run_id(corpus, settings)
    base.parent.mkdir(parents=True, exist_ok=True)
    for n in range(1, 1000):
        candidate = base if n == 1 else base.with_name(f"{base.name}-{n}")
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            continue
    raise TrainingError(f"cannot create a run folder next to {base}", "remove old runs from the finetune folder")


_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def resume_dir(run_id: str, corpus: Corpus, settings: Settings) -> Path:
    """The folder of an interrupted run to continue, after checking that it is one and that it
    trained this corpus on this base model."""
    root = runs_dir(settings)
    run_dir = root / run_id
    if not _RUN_ID.fullmatch(run_id) or run_dir.resolve().parent != root.resolve():
        raise TrainingError(f"'{run_id}' is not a fine-tune run id", "see `ragft finetune-runs` for run ids")
    if not (run_dir / "run.json").is_file():
        raise TrainingError(f"no fine-tune run '{run_id}'", "see `ragft finetune-runs` for run ids")
    record = load_run(run_dir)
    if record.get("corpus") != corpus.name or record.get("base_model") != settings.model:
        raise TrainingError(f"run '{run_id}' fine-tuned corpus '{record.get('corpus')}' on base model "
                            f"'{record.get('base_model')}', not '{corpus.name}' on '{settings.model}'",
                            f"resume it with its own corpus and model (--model {record.get('base_model')}), "
                            "or start a new fine-tune")
    return run_dir


def load_run(run_dir: Path) -> FinetuneRun:
    return FinetuneRun(**json.loads((run_dir / "run.json").read_text(encoding="utf-8")))


def list_runs(settings: Settings) -> list[FinetuneRun]:
    base = runs_dir(settings)
    runs = []
    for d in sorted(base.iterdir()) if base.is_dir() else []:
        if (d / "run.json").is_file():
            runs.append(load_run(d))
    return runs


def latest_run(corpus_name: str, settings: Settings) -> FinetuneRun | None:
    done = [r for r in list_runs(settings) if r.get("corpus") == corpus_name and r.get("base_model") == settings.model
            and r.get("status") == "served" and r.get("quantization") == settings.quantization]
    return done[-1] if done else None


def read_losses(run_dir: Path) -> list[dict[str, Any]]:
    """The rows of loss.jsonl so far; a line the training loop is writing right now is skipped."""
    rows = []
    with contextlib.suppress(OSError):
        for line in (run_dir / "loss.jsonl").read_text(encoding="utf-8").splitlines():
            with contextlib.suppress(ValueError):
                rows.append(json.loads(line))
    return rows


def training_progress(run_dir: Path) -> dict[str, Any]:
    """Where a run is, read from what it persists: run.json (status, examples, params) and loss.jsonl.

    The total step count is the training loop's own: ceil(ceil(examples / batch) / grad_accum) × epochs.
    """
    record = load_run(run_dir)
    rows = read_losses(run_dir)
    params = record.get("params") or {}
    total = (record.get("training") or {}).get("total_steps")
    if total is None and record.get("n_examples") and params:
        batches = math.ceil(record["n_examples"] / params["batch_size"])
        total = math.ceil(batches / params["grad_accum"]) * params["epochs"]
    return {"run_id": record["run_id"], "status": record.get("status"), "step": rows[-1]["step"] if rows else 0,
            "total_steps": total, "loss": rows[-1]["loss"] if rows else None, "losses": rows,
            "resumable": (run_dir / "checkpoint" / "state.pt").is_file() and record.get("status") != "served",
            "ollama_model": record.get("ollama_model")}


def loss_chart(run_dir: Path) -> Any:
    """The loss curve of a run as an Altair chart (the CLI saves it as PNG; the app draws it live)."""
    import altair as alt
    import pandas as pd

    rows = read_losses(run_dir)
    return alt.Chart(pd.DataFrame(rows), title=f"training loss · {run_dir.name}").mark_line(point=True).encode(
        x=alt.X("step:Q", title="optimizer step"), y=alt.Y("loss:Q", title="loss"), tooltip=["step", "epoch", "loss", "lr"])


def write_loss_plot(run_dir: Path) -> Path:
    import vl_convert as vlc

    out = run_dir / "loss.png"
    out.write_bytes(vlc.vegalite_to_png(loss_chart(run_dir).to_json(), scale=1.5))
    return out
