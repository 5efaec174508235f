"""Health checks shared by `ragft doctor` and the app's status page."""

from __future__ import annotations

import shutil
from dataclasses import dataclass

from pipelines import corpus as corpora
from pipelines import finetune_runs, generation, models, ollama_build, rag, serving
from pipelines.config import Settings
from pipelines.errors import RagftError


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""
    required: bool = True


def run_checks(settings: Settings) -> list[Check]:
    """Look, never change: nothing is built, started or downloaded here."""
    checks: list[Check] = []
    try:
        binary = ollama_build.find_binary(settings)
    except RagftError as exc:
        binary = None
        checks.append(Check("ollama binary", False, exc.message, exc.fix or ""))
    else:
        if binary:
            checks.append(Check("ollama binary", True, f"{binary.path} (version {binary.version}, from {binary.source})"))
        else:
            go = shutil.which("go")
            fix = "run `ragft setup` (builds it with Go)" if go else ollama_build._GET_OLLAMA.format(
                module=ollama_build.OLLAMA_MODULE, version=settings.ollama_version)
            checks.append(Check("ollama binary", False, "not found on PATH or in the cache", fix))

    server = serving.running_server(settings)
    if server:
        checks.append(Check("ollama server", True, f"{server.url} healthy (version {server.version})"))
    else:
        checks.append(Check("ollama server", False, "not running", "run `ragft setup` or `ragft serve start`"))

    try:
        spec = models.get_spec(settings.model, settings)
    except RagftError as exc:
        checks.append(Check("base model", False, exc.message, exc.fix or ""))
        spec = None
    if spec is not None:
        name = models.served_name(spec, settings)
        weights = models.hf_dir(spec, settings)
        ready = models.prepared(spec, settings)
        checks.append(Check("base weights", ready, f"{spec.name}: {weights}" + ("" if ready else " (not prepared)"),
                            "" if ready else "run `ragft setup`"))
        if server:
            served = generation.has_model(server, settings, name)
            checks.append(Check("served model", served, name + ("" if served else " (missing on the server)"),
                                "" if served else "run `ragft setup`"))

    import torch

    from pipelines.train import detect_device

    try:
        dev = detect_device(settings.train_device)
        checks.append(Check("training device", True, f"{dev.name}: {dev.why} (torch {torch.__version__}, "
                                                     f"{settings.num_threads} threads)"))
    except RagftError as exc:
        checks.append(Check("training device", False, exc.message, exc.fix or ""))
    data = settings.data_dir.expanduser()
    probe = data if data.exists() else data.parent
    while not probe.exists():
        probe = probe.parent
    free_gb = shutil.disk_usage(probe).free / 1e9
    checks.append(Check("data dir", True, f"{data}"))
    checks.append(Check("free disk", free_gb >= 2, f"{free_gb:.1f} GB free at {probe}",
                        "" if free_gb >= 2 else "free at least 2 GB or set RAGFT_DATA_DIR elsewhere"))
    return checks


def model_rows(settings: Settings, server: serving.Server | None) -> list[dict[str, object]]:
    """Every base model ragft knows: prepared (weights converted) and served (on the server now)."""
    served = generation.served_models(server, settings) if server else {}
    rows: list[dict[str, object]] = []
    try:
        names = models.known_models(settings)
    except RagftError as exc:  # a broken models.json or ragft.toml entry is shown, the rest still listed
        names = models.known_models()
        rows.append({"model": "(added models)", "default": False, "description": exc.message,
                     "prepared": False, "served": False, "served as": "", "fix": exc.fix or ""})
    for name in names:
        try:
            spec = models.get_spec(name, settings)
        except RagftError as exc:
            rows.append({"model": name, "default": name == settings.model, "description": exc.message,
                         "prepared": False, "served": False, "served as": "", "fix": exc.fix or ""})
            continue
        served_as = models.served_name(spec, settings)
        prepared = models.prepared(spec, settings)
        on_server = served_as in served or f"{served_as}:latest" in served
        rows.append({"model": name, "default": name == settings.model, "description": spec.description,
                     "license": spec.license,
                     "prepared": prepared, "served": on_server, "served as": served_as,
                     "fix": "" if prepared and on_server else f"`ragft setup --model {name}`"})
    return rows


def corpus_rows(settings: Settings, server: serving.Server | None) -> list[dict[str, object]]:
    """Every corpus with its documents, questions, index and newest fine-tuned model."""
    served = generation.served_models(server, settings) if server else {}
    rows: list[dict[str, object]] = []
    for name, path in corpora.list_corpora(settings).items():
        row: dict[str, object] = {"corpus": name, "bundled": path.parent == corpora.BUNDLED_DIR, "path": str(path)}
        try:
            c = corpora.load(str(path), settings)
        except RagftError as exc:
            rows.append({**row, "problem": exc.message, "fix": exc.fix or ""})
            continue
        record = rag.index_record(c, settings)
        run = finetune_runs.latest_run(c.name, settings)
        ft_model = str(run["ollama_model"]) if run else None
        rows.append({**row, "docs": len(c.doc_paths), "eval": len(c.eval), "train": len(c.train), "license": c.license,
                     "index chunks": int(record["chunks"]) if record else None,
                     "fine-tuned model": ft_model, "ft served": bool(ft_model) and ft_model in served,
                     "problem": "; ".join(c.problems[:3]), "fix": ""})
    return rows
