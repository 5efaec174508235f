"""Qwen2.5-Coder-0.5B end to end: packaged weights → HF → served → fine-tuned a few steps → four arms.

Most live tests use the fast SmolLM2; this one takes the 0.5B model (the stronger reader, and
the default-in-waiting, see README → Base models side by side) through every step on a fresh
machine, so its route is tested by CI and not only measured once.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines import finetune as ft
from pipelines import models, rag, serving
from pipelines.arms import LOCAL_ARMS, get_arm
from pipelines.config import Settings
from pipelines.train import LoraParams
from tests.test_finetune import _corpus_with_train

QWEN = "qwen2.5-coder-0.5b"


@pytest.mark.slow
@pytest.mark.ollama
def test_qwen_prepares_fine_tunes_serves_and_answers_all_four_arms(
        tmp_path: Path, live_settings: Settings, ollama_server: serving.Server) -> None:
    s = live_settings.model_copy(update={"data_dir": tmp_path / "data", "model": QWEN})
    spec = models.get_spec(QWEN, s)
    base = models.ensure_served(spec, s, ollama_server, print)
    assert models.prepared(spec, s) and base == f"ragft-{QWEN}:{s.quantization}"
    c = _corpus_with_train(tmp_path / "k", s)
    rag.build_index(c, s)
    record = ft.finetune(c, s, ollama_server, ["qa"], LoraParams(epochs=2, batch_size=8, max_length=128))
    assert record["status"] == "served" and record["training"]["steps"] == 2
    assert record["ollama_model"].startswith(f"ragft-{QWEN}-") and record["ollama_model"].endswith(s.quantization)
    question = "Who is the harbour master of Kelmouth?"
    answers = {arm: get_arm(arm, s, ollama_server, c).answer(question) for arm in LOCAL_ARMS}
    for arm, a in answers.items():
        assert a.text.strip() and not models.looks_degenerate(a.text), (arm, a.text)
        assert a.generation.output_tokens > 0
    assert answers["ft"].model == answers["ft_rag"].model == record["ollama_model"] != answers["base"].model
    assert "Brandt" in answers["rag"].text  # the passage holds the answer; the 0.5B model reads it
