"""Models a team brings: a GGUF file or a Hugging Face folder, registered under a name.

`ragft models add PATH --name NAME` records the entry in `<data_dir>/models.json`; a
`[models.NAME]` table in ragft.toml (`path = …`, optional `template`, `license`) does the same
by hand. Either way the model takes the registry's route — GGUF → dequantised HF safetensors →
`ollama create` at the quantisation every arm shares — so its four arms are as fair as the
built-in models' are. What cannot take that route is refused when it is added, not an hour later.
"""

from __future__ import annotations

import functools
import json
from dataclasses import asdict, dataclass
from pathlib import Path

from pipelines import files
from pipelines.config import Settings
from pipelines.errors import ModelPrepError, UnknownNameError, option
from pipelines.files import sha256_file

# HF causal-LM classes that Ollama v0.11.4's importer (convert/convert.go, LoadModelMetadata)
# turns into a GGUF, and that transformers + PEFT train. Its multimodal and embedding classes
# (Mllama, Llama4, Mistral3, Gemma3n, Qwen2.5-VL, Bert) are left out: ragft's arms are text-only.
OLLAMA_CAUSAL_ARCHITECTURES = (
    "CohereForCausalLM", "Gemma2ForCausalLM", "Gemma3ForCausalLM", "GemmaForCausalLM", "GptOssForCausalLM",
    "LlamaForCausalLM", "MixtralForCausalLM", "Phi3ForCausalLM", "Qwen2ForCausalLM",
)
# GGUF `general.architecture` values transformers can dequantise, with the HF class they become;
# only those whose class Ollama imports are listed.
GGUF_ARCHITECTURES = {
    "gemma2": "Gemma2ForCausalLM", "gemma3": "Gemma3ForCausalLM", "llama": "LlamaForCausalLM",
    "phi3": "Phi3ForCausalLM", "qwen2": "Qwen2ForCausalLM",
}

# Ollama Go templates for the chat formats a model's own (Jinja) chat template can use. The
# served template must be the one fine-tuning trained on, so it is chosen from the model's
# chat template, never guessed from its name.
TEMPLATES: dict[str, tuple[str, tuple[str, ...]]] = {
    "chatml": (
        "{{ if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}"
        "{{ if .Prompt }}<|im_start|>user\n{{ .Prompt }}<|im_end|>\n{{ end }}"
        "<|im_start|>assistant\n{{ .Response }}<|im_end|>\n",
        ("<|im_end|>", "<|im_start|>", "<|endoftext|>"),
    ),
    "gemma": (
        "<start_of_turn>user\n{{ if .System }}{{ .System }}\n\n{{ end }}{{ .Prompt }}<end_of_turn>\n"
        "<start_of_turn>model\n{{ .Response }}<end_of_turn>\n",
        ("<end_of_turn>",),
    ),
    "llama3": (
        "{{ if .System }}<|start_header_id|>system<|end_header_id|>\n\n{{ .System }}<|eot_id|>{{ end }}"
        "{{ if .Prompt }}<|start_header_id|>user<|end_header_id|>\n\n{{ .Prompt }}<|eot_id|>{{ end }}"
        "<|start_header_id|>assistant<|end_header_id|>\n\n{{ .Response }}<|eot_id|>",
        ("<|eot_id|>", "<|start_header_id|>"),
    ),
    "phi3": (
        "{{ if .System }}<|system|>\n{{ .System }}<|end|>\n{{ end }}"
        "{{ if .Prompt }}<|user|>\n{{ .Prompt }}<|end|>\n{{ end }}<|assistant|>\n{{ .Response }}<|end|>\n",
        ("<|end|>", "<|user|>", "<|endoftext|>"),
    ),
}
_MARKERS = (("<|im_start|>", "chatml"), ("<start_of_turn>", "gemma"), ("<|start_header_id|>", "llama3"),
            ("<|assistant|>", "phi3"))


@dataclass(frozen=True)
class LocalModel:
    name: str
    path: Path
    kind: str  # "gguf" | "hf"
    architecture: str  # the HF class it becomes
    template: str  # a key of TEMPLATES
    license: str
    sha256: str  # of the GGUF (checked before every conversion), or over the HF folder's files


def detect_template(chat_template: str | None) -> str | None:
    """Which chat format a Jinja chat template writes; None when it is none of ours."""
    for marker, name in _MARKERS:
        if chat_template and marker in chat_template:
            return name
    return None


def _gguf_metadata(path: Path) -> tuple[str, str | None]:
    from gguf import GGUFReader

    try:
        reader = GGUFReader(path)
    except Exception as exc:  # gguf raises ValueError/struct errors/OSError on a non-GGUF file
        raise ModelPrepError(f"{path} is not a readable GGUF file: {exc}", "pass a .gguf file or a HF model folder") from exc

    def text(key: str) -> str | None:
        field = reader.fields.get(key)
        return None if field is None else bytes(field.parts[field.data[0]]).decode("utf-8", "replace")

    return text("general.architecture") or "", text("tokenizer.chat_template")


def _hf_metadata(path: Path) -> tuple[str, str | None]:
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelPrepError(f"{path} has no readable config.json ({exc})", "pass a Hugging Face model folder") from exc
    archs = config.get("architectures") or [""]
    chat: str | None = None
    tok_config = path / "tokenizer_config.json"
    if tok_config.is_file():
        chat = json.loads(tok_config.read_text(encoding="utf-8")).get("chat_template")
    if chat is None and (path / "chat_template.jinja").is_file():
        chat = (path / "chat_template.jinja").read_text(encoding="utf-8")
    if not list(path.glob("*.safetensors")):
        raise ModelPrepError(f"{path} holds no .safetensors weights", "save the model with safe_serialization=True")
    if not (path / "tokenizer.json").is_file() and not (path / "tokenizer.model").is_file():
        raise ModelPrepError(f"{path} has no tokenizer.json or tokenizer.model", "save the tokenizer into the folder too")
    return str(archs[0]), chat if isinstance(chat, str) else None


def inspect(path: Path, name: str, template: str | None = None, license: str | None = None) -> LocalModel:
    """Check that a GGUF file or HF folder can take ragft's route; the error names what can."""
    path = path.expanduser().resolve()
    if path.is_dir():
        kind, (arch, chat) = "hf", _hf_metadata(path)
        if arch not in OLLAMA_CAUSAL_ARCHITECTURES:
            raise ModelPrepError(
                f"{path}: architecture '{arch or 'none given'}' cannot be imported by Ollama v0.11.4 and trained by ragft",
                f"supported architectures: {', '.join(OLLAMA_CAUSAL_ARCHITECTURES)}",
            )
    elif path.is_file():
        kind, (gguf_arch, chat) = "gguf", _gguf_metadata(path)
        if gguf_arch not in GGUF_ARCHITECTURES:
            raise ModelPrepError(
                f"{path}: GGUF architecture '{gguf_arch or 'none given'}' cannot take ragft's route "
                "(dequantise with transformers, import with Ollama v0.11.4)",
                f"supported GGUF architectures: {', '.join(sorted(GGUF_ARCHITECTURES))}; "
                f"or pass a HF folder of one of: {', '.join(OLLAMA_CAUSAL_ARCHITECTURES)}",
            )
        arch = GGUF_ARCHITECTURES[gguf_arch]
    else:
        raise ModelPrepError(f"{path} does not exist", "pass the path of a .gguf file or a HF model folder")
    chosen = template or detect_template(chat)
    if chosen not in TEMPLATES:
        found = "has no chat template" if not chat else "has a chat template ragft does not recognise"
        raise ModelPrepError(
            f"{path} {found}" + (f" ('{template}' is not one ragft knows)" if template else ""),
            f"pass {option('template')} with one of: {', '.join(TEMPLATES)} (the format the model was instruction-tuned on)",
        )
    if template and chat and detect_template(chat) not in (None, template):
        raise ModelPrepError(f"{option('template')} {template} contradicts the model's own chat template "
                             f"({detect_template(chat)})", f"leave {option('template')} out, or fix the model's chat template")
    digest = sha256_file(path) if kind == "gguf" else _folder_digest(path)
    return LocalModel(name, path, kind, arch, chosen, license or "as published by its authors", digest)


def _folder_digest(path: Path) -> str:
    """One sha256 over a HF folder's files: it names the served model, so changed weights get a new one."""
    import hashlib

    h = hashlib.sha256()
    for f in sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith(".")):
        h.update(f"{f.name}\0{sha256_file(f)}\n".encode())
    return h.hexdigest()


def registry_path(settings: Settings) -> Path:
    return settings.data_dir / "models.json"


def load_local(settings: Settings) -> dict[str, LocalModel]:
    """Models added with `ragft models add`, then those in ragft.toml (which win)."""
    out: dict[str, LocalModel] = {}
    path = registry_path(settings)
    if path.is_file():
        try:
            for entry in json.loads(path.read_text(encoding="utf-8")).values():
                out[entry["name"]] = LocalModel(**{**entry, "path": Path(entry["path"])})
        except (ValueError, TypeError, KeyError) as exc:
            raise ModelPrepError(f"{path} is corrupt: {exc}", "remove it and add the models again") from exc
    for name, entry in settings.models.items():
        if "path" not in entry:
            raise ModelPrepError(f"ragft.toml: [models.{name}] has no path", "add path = \"/path/to/model.gguf or folder\"")
        out[name] = _inspect_once(str(Path(entry["path"]).expanduser().resolve()), _stat_key(Path(entry["path"])),
                                  name, entry.get("template"), entry.get("license"))
    return out


def _stat_key(path: Path) -> tuple[int, int]:
    try:
        st = path.expanduser().stat()
        return st.st_size, st.st_mtime_ns
    except OSError:
        return -1, -1


@functools.lru_cache(maxsize=64)
def _inspect_once(path: str, stat_key: tuple[int, int], name: str, template: str | None,
                  license: str | None) -> LocalModel:
    # A ragft.toml entry is read on every settings lookup; its sha256 (seconds for a GB-sized
    # GGUF) is computed once per process and file version, not on every call.
    return inspect(Path(path), name, template, license)


def add_model(path: Path, name: str, settings: Settings, template: str | None = None,
              license: str | None = None, builtin: tuple[str, ...] = ()) -> LocalModel:
    """Inspect and register a model; it is prepared (converted, created) on first use."""
    if files.safe_name(name) != name:
        raise UnknownNameError(f"model name '{name}' is not usable", f"use a lowercase name such as '{files.safe_name(name)}'")
    if name in builtin or name == "custom":
        raise UnknownNameError(f"'{name}' is a built-in model", f"choose another {option('name')}")
    model = inspect(path, name, template, license)
    path_ = registry_path(settings)
    entries = json.loads(path_.read_text(encoding="utf-8")) if path_.is_file() else {}
    entries[name] = {**asdict(model), "path": str(model.path)}
    path_.parent.mkdir(parents=True, exist_ok=True)
    files.write_json(path_, entries)
    return model
