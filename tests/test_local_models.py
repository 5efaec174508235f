"""Bring your own model: `ragft models add PATH --name NAME` for a GGUF file or a HF folder.

The fast tests check what is refused before any conversion (architecture, chat format, name);
the live ones take the packaged SmolLM2 GGUF and its converted HF folder through the real
route (dequantise, `ollama create` at the shared quantisation, answer) as a team's own model.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli import app
from pipelines import local_models, models, serving
from pipelines.arms import get_arm
from pipelines.config import Settings
from pipelines.errors import ModelPrepError, UnknownNameError

CHATML = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"


def hf_folder(root: Path, arch: str, chat_template: str | None = CHATML) -> Path:
    root.mkdir(parents=True)
    (root / "config.json").write_text(json.dumps({"architectures": [arch], "model_type": "x"}))
    (root / "tokenizer.json").write_text("{}")
    (root / "model.safetensors").write_bytes(b"\0" * 16)
    tok = {"chat_template": chat_template} if chat_template else {}
    (root / "tokenizer_config.json").write_text(json.dumps(tok))
    return root


def tiny_gguf(path: Path, arch: str, chat_template: str | None = CHATML) -> Path:
    import numpy as np
    from gguf import GGUFWriter

    writer = GGUFWriter(str(path), arch)
    if chat_template:
        writer.add_chat_template(chat_template)
    writer.add_tensor("token_embd.weight", np.zeros((4, 4), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.mark.parametrize(("template", "expected"), [
    (CHATML, "chatml"), ("<start_of_turn>user\n{{ x }}<end_of_turn>", "gemma"),
    ("<|start_header_id|>user<|end_header_id|>", "llama3"), ("<|user|>\n{{ c }}<|end|>\n<|assistant|>", "phi3"),
    ("[INST] {{ c }} [/INST]", None), (None, None),
])
def test_chat_format_is_read_from_the_models_own_template(template: str | None, expected: str | None) -> None:
    assert local_models.detect_template(template) == expected


def test_hf_folder_of_an_architecture_ollama_cannot_import_names_the_supported_ones(tmp_path: Path,
                                                                                   settings: Settings) -> None:
    folder = hf_folder(tmp_path / "mamba", "MambaForCausalLM")
    with pytest.raises(ModelPrepError) as err:
        local_models.add_model(folder, "my-mamba", settings)
    assert "MambaForCausalLM" in err.value.message
    assert "Qwen2ForCausalLM" in (err.value.fix or "") and "LlamaForCausalLM" in (err.value.fix or "")
    assert not local_models.registry_path(settings).exists()  # nothing recorded


def test_gguf_of_an_unsupported_architecture_is_refused(tmp_path: Path, settings: Settings) -> None:
    gguf = tiny_gguf(tmp_path / "m.gguf", "mamba")
    with pytest.raises(ModelPrepError) as err:
        local_models.add_model(gguf, "my-mamba", settings)
    assert "'mamba'" in err.value.message and "qwen2" in (err.value.fix or "")


def test_a_file_that_is_not_gguf_is_refused(tmp_path: Path, settings: Settings) -> None:
    bad = tmp_path / "notes.gguf"
    bad.write_text("hello")
    with pytest.raises(ModelPrepError, match="not a readable GGUF"):
        local_models.add_model(bad, "notes", settings)
    with pytest.raises(ModelPrepError, match="does not exist"):
        local_models.add_model(tmp_path / "missing.gguf", "missing", settings)


def test_unknown_chat_format_needs_template_and_a_contradiction_is_refused(tmp_path: Path, settings: Settings) -> None:
    folder = hf_folder(tmp_path / "m", "LlamaForCausalLM", "[INST] {{ c }} [/INST]")
    with pytest.raises(ModelPrepError) as err:
        local_models.add_model(folder, "m", settings)
    assert "--template" in (err.value.fix or "") and "chatml" in (err.value.fix or "")
    added = local_models.add_model(folder, "m", settings, template="llama3")
    assert added.template == "llama3" and added.architecture == "LlamaForCausalLM"
    chatml = hf_folder(tmp_path / "c", "Qwen2ForCausalLM")
    with pytest.raises(ModelPrepError, match="contradicts"):
        local_models.add_model(chatml, "c", settings, template="gemma")


def test_names_are_checked_and_builtins_kept(tmp_path: Path, settings: Settings) -> None:
    folder = hf_folder(tmp_path / "m", "Qwen2ForCausalLM")
    with pytest.raises(UnknownNameError, match="not usable"):
        local_models.add_model(folder, "My Model", settings)
    with pytest.raises(UnknownNameError, match="built-in"):
        local_models.add_model(folder, "smollm2-135m", settings, builtin=tuple(models.REGISTRY))


def test_added_and_toml_models_are_known_with_their_digest_in_the_served_name(tmp_path: Path,
                                                                               settings: Settings) -> None:
    folder = hf_folder(tmp_path / "m", "Qwen2ForCausalLM")
    local_models.add_model(folder, "team-model", settings, license="MIT")
    spec = models.get_spec("team-model", settings)
    assert spec.hf_dir == folder.resolve() and spec.license == "MIT" and "<|im_end|>" in spec.stop
    first = models.served_name(spec, settings)
    assert first.startswith("ragft-team-model-") and first.endswith(":q8_0")
    (folder / "model.safetensors").write_bytes(b"\1" * 16)  # new weights, added again → a new served name
    local_models.add_model(folder, "team-model", settings)
    assert models.served_name(models.get_spec("team-model", settings), settings) != first
    other = hf_folder(tmp_path / "t", "LlamaForCausalLM", "<|start_header_id|>")
    by_hand = settings.model_copy(update={"models": {"from-toml": {"path": str(other)}}})
    assert "from-toml" in models.known_models(by_hand) and "team-model" in models.known_models(by_hand)
    assert models.get_spec("from-toml", by_hand).template.startswith("{{ if .System }}<|start_header_id|>")
    with pytest.raises(ModelPrepError, match="no path"):
        models.known_models(settings.model_copy(update={"models": {"broken": {"template": "chatml"}}}))


def test_ragft_toml_models_table_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pipelines.config import load_settings

    folder = hf_folder(tmp_path / "m", "Gemma3ForCausalLM", "<start_of_turn>")
    toml = tmp_path / "ragft.toml"
    toml.write_text(f'[models.our-gemma]\npath = "{folder}"\nlicense = "Gemma Terms of Use"\n')
    monkeypatch.setenv("RAGFT_CONFIG", str(toml))
    s = load_settings()
    assert models.get_spec("our-gemma", s).license == "Gemma Terms of Use"


@pytest.mark.ollama
def test_a_teams_gguf_and_hf_folder_take_the_builtin_route(live_settings: Settings, ollama_server: serving.Server,
                                                           base_model: str, tmp_path: Path) -> None:
    """The packaged SmolLM2 GGUF, copied elsewhere, stands in for a team's file; its HF folder for theirs."""
    s = live_settings.model_copy(update={"data_dir": tmp_path / "data"})
    builtin = models.get_spec("smollm2-135m", s)
    gguf = Path(shutil.copy(models.ensure_gguf(builtin, s), tmp_path / "our-model.gguf"))
    runner = CliRunner()
    env = {"RAGFT_CACHE_DIR": str(s.cache_root)}  # the session's Ollama build and converted weights
    out = runner.invoke(app, ["models", "add", str(gguf), "--name", "our-gguf", "--prepare", "--data-dir", str(s.data_dir)],
                        env=env)
    assert out.exit_code == 0, out.output
    assert "LlamaForCausalLM" in out.output and "chatml" in out.output and "ready:" in out.output
    folder = shutil.copytree(models.ensure_hf_weights(builtin, s), tmp_path / "our-hf")
    local_models.add_model(folder, "our-hf", s)
    for name in ("our-gguf", "our-hf"):
        spec = models.get_spec(name, s)
        served = models.ensure_served(spec, s, ollama_server, print)
        assert served.endswith(":q8_0")  # the quantisation every arm shares
        answer = get_arm("base", s.model_copy(update={"model": name}), ollama_server).answer("What is the capital of France?")
        assert "paris" in answer.text.lower(), answer.text
    listing = runner.invoke(app, ["models", "--data-dir", str(s.data_dir)], env={"COLUMNS": "200", **env})
    assert listing.exit_code == 0 and "our-gguf" in listing.output and "our-hf" in listing.output
    gguf.write_bytes(b"changed")  # the file changed after it was added: refused, never converted silently
    with pytest.raises(ModelPrepError, match="changed since"):
        models.ensure_gguf(models.get_spec("our-gguf", s), s)


def test_supported_architectures_are_the_ones_ollamas_importer_accepts() -> None:
    """Read from the Ollama module ragft builds (its convert.go), when the module cache holds it."""
    import os
    import re

    from pipelines.config import Settings as S

    cache = Path(os.environ.get("GOMODCACHE") or Path.home() / "go" / "pkg" / "mod")
    source = cache / "github.com" / "ollama" / f"ollama@{S().ollama_version}" / "convert" / "convert.go"
    if not source.is_file():
        pytest.skip(f"{source} is not downloaded (it is after the first Ollama build)")
    accepted = set(re.findall(r'"(\w+For\w+|\w+Model)"', source.read_text(encoding="utf-8")))
    assert set(local_models.OLLAMA_CAUSAL_ARCHITECTURES) <= accepted
    assert set(local_models.GGUF_ARCHITECTURES.values()) <= set(local_models.OLLAMA_CAUSAL_ARCHITECTURES)
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

    assert set(local_models.GGUF_ARCHITECTURES) <= set(GGUF_SUPPORTED_ARCHITECTURES)
