"""The default generator end to end: packaged weights → HF → served → fine-tuned a few steps → four arms.

Most live tests pin the fast SmolLM2 (conftest); this one prepares whatever the default model
is, so a change of default is exercised on a fresh machine by CI.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines import finetune as ft
from pipelines import models, rag, serving
from pipelines.arms import ARM_NAMES, get_arm
from pipelines.config import Settings
from pipelines.train import LoraParams
from tests.test_finetune import _corpus_with_train

DEFAULT_MODEL = Settings.model_fields["model"].default


@pytest.mark.slow
@pytest.mark.ollama
def test_default_model_prepares_fine_tunes_serves_and_answers_all_four_arms(
        tmp_path: Path, live_settings: Settings, ollama_server: serving.Server) -> None:
    s = live_settings.model_copy(update={"data_dir": tmp_path / "data", "model": DEFAULT_MODEL})
    spec = models.get_spec(DEFAULT_MODEL, s)
    base = models.ensure_served(spec, s, ollama_server, print)
    assert models.prepared(spec, s) and base == f"ragft-{DEFAULT_MODEL}:{s.quantization}"
    c = _corpus_with_train(tmp_path / "k", s)
    rag.build_index(c, s)
    record = ft.finetune(c, s, ollama_server, ["qa"], LoraParams(epochs=2, batch_size=8, max_length=128))
    assert record["status"] == "served" and record["training"]["steps"] == 2
    assert record["ollama_model"].startswith(f"ragft-{DEFAULT_MODEL}-") and record["ollama_model"].endswith(s.quantization)
    question = "Who is the harbour master of Kelmouth?"
    answers = {arm: get_arm(arm, s, ollama_server, c).answer(question) for arm in ARM_NAMES}
    for arm, a in answers.items():
        assert a.text.strip() and not models.looks_degenerate(a.text), (arm, a.text)
        assert a.generation.output_tokens > 0
    assert answers["ft"].model == answers["ft_rag"].model == record["ollama_model"] != answers["base"].model
    assert "Brandt" in answers["rag"].text  # the passage holds the answer; the default model reads it
