"""Health checks shared by `ragft doctor` and the app's status page."""

from __future__ import annotations

import shutil
from dataclasses import dataclass

from pipelines import models, serving
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
        binary = serving.find_binary(settings)
    except RagftError as exc:
        binary = None
        checks.append(Check("ollama binary", False, exc.message, exc.fix or ""))
    else:
        if binary:
            checks.append(Check("ollama binary", True, f"{binary.path} (version {binary.version}, from {binary.source})"))
        else:
            go = shutil.which("go")
            fix = "run `ragft setup` (builds it with Go)" if go else serving._GET_OLLAMA.format(
                module=serving.OLLAMA_MODULE, version=settings.ollama_version)
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
        ready = spec.hf_dir is not None or models.weights_ready(weights)
        checks.append(Check("base weights", ready, f"{spec.name}: {weights}" + ("" if ready else " (not prepared)"),
                            "" if ready else "run `ragft setup`"))
        if server:
            served = serving.has_model(server, settings, name)
            checks.append(Check("served model", served, name + ("" if served else " (missing on the server)"),
                                "" if served else "run `ragft setup`"))

    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    checks.append(Check("torch device", True, f"{device} (torch {torch.__version__}, {torch.get_num_threads()} threads)"))
    data = settings.data_dir.expanduser()
    probe = data if data.exists() else data.parent
    while not probe.exists():
        probe = probe.parent
    free_gb = shutil.disk_usage(probe).free / 1e9
    checks.append(Check("data dir", True, f"{data}"))
    checks.append(Check("free disk", free_gb >= 2, f"{free_gb:.1f} GB free at {probe}",
                        "" if free_gb >= 2 else "free at least 2 GB or set RAGFT_DATA_DIR elsewhere"))
    return checks
