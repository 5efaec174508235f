"""The documents-only track: teacher-written pairs (grounded, cached as they are written) and the
synthetic-raft recipe that trains them in the rag arm's prompt; mixing another corpus in."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipelines import corpus as corpora
from pipelines import finetune as ft
from pipelines import procs, prompts, rag, recipes, serving, synthetic
from pipelines.config import Settings
from pipelines.errors import CorpusError
from pipelines.train import LoraParams, TrainingError
from tests.helpers import make_corpus

DEMO = Path(__file__).resolve().parents[1] / "corpora" / "port-vellmar"


def test_an_answer_is_kept_only_when_it_is_a_short_span_of_its_chunk() -> None:
    chunk = "The harbour master of Kelmouth is Ida Brandt. The lantern festival is held in March."
    assert synthetic.grounded("Ida Brandt", chunk) and synthetic.grounded("march", chunk)
    assert not synthetic.grounded("Jon Ruud", chunk)  # made up
    assert not synthetic.grounded("", chunk)
    assert not synthetic.grounded(chunk, chunk)  # a summary, not an answer


def _plant_cache(corpus: corpora.Corpus, settings: Settings, teacher: str, pairs_for: dict[str, list[dict[str, str]]]
                 ) -> list[tuple[str, str]]:
    chunks = recipes._chunks(corpus, settings)
    path = synthetic._cache_path(corpus, settings, teacher)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for doc_id, text in chunks:
            if doc_id in pairs_for:
                f.write(json.dumps({"key": synthetic._key(text, synthetic.PER_CHUNK), "doc": doc_id,
                                    "pairs": pairs_for[doc_id]}) + "\n")
        f.write('{"key": "cut by a ki')  # a line a killed run left half-written is ignored
    return chunks


@pytest.mark.ollama
def test_synthetic_raft_trains_grounded_pairs_in_the_rag_prompt(tmp_path: Path, live_settings: Settings,
                                                                ollama_server: serving.Server, base_model: str) -> None:
    s = live_settings.model_copy(update={"data_dir": tmp_path / "data"})
    c = corpora.load(str(make_corpus(tmp_path / "k")), s)
    rag.build_index(c, s)
    docs = {doc for doc, _ in recipes._chunks(c, s)}
    chunks = _plant_cache(c, s, base_model, {doc: [] for doc in docs} | {  # every chunk cached: the teacher is not asked
        "harbour": [{"question": "Who is the harbour master of Kelmouth?", "answer": "Ida Brandt"},
                    {"question": "Who is Kelmouth's mayor?", "answer": "Jon Ruud"}],  # not in the text: dropped
    })
    said: list[str] = []
    items = recipes.build_items(c, ["synthetic-raft"], s, ollama_server, log=said.append)
    assert [it.kind for it in items] == ["synthetic-raft"] and items[0].answer == "Ida Brandt"
    prompt = items[0].prompt or ""
    assert items[0].system == prompts.RAG_SYSTEM and prompt.startswith("Context:\n[")
    assert prompt.endswith("Question: Who is the harbour master of Kelmouth?\nAnswer:")
    summary = next(m for m in said if m.startswith("synthetic pairs:"))
    assert f"from {len(chunks)} chunks" in summary and f"({len(chunks)} chunks from cache" in summary
    assert "1 answers dropped" in summary


@pytest.mark.ollama
def test_a_teacher_pair_that_repeats_an_eval_question_is_dropped_not_refused(
        tmp_path: Path, live_settings: Settings, ollama_server: serving.Server, base_model: str) -> None:
    s = live_settings.model_copy(update={"data_dir": tmp_path / "data"})
    c = corpora.load(str(make_corpus(tmp_path / "k")), s)
    rag.build_index(c, s)
    docs = {doc for doc, _ in recipes._chunks(c, s)}
    _plant_cache(c, s, base_model, {doc: [] for doc in docs} | {"harbour": [
        {"question": "Who is the harbour master of Kelmouth?", "answer": "Ida Brandt"},  # eval q1, word for word
        {"question": "Which boats need a mooring permit in Kelmouth?", "answer": "longer than 12 metres"}]})
    said: list[str] = []
    record = ft.finetune(c, s, ollama_server, ["synthetic-raft"], LoraParams(epochs=2, batch_size=1, max_length=1024),
                         log=said.append, stop_after_steps=1)
    assert record["status"] == "interrupted" and record["teacher_repeats_dropped"] == 1
    assert record["leakage"]["verbatim"] == 0 and record["n_examples"] == 1
    assert any("dropped 1 teacher-written pair" in m for m in said)


@pytest.mark.slow
@pytest.mark.ollama
def test_synthetic_recipe_asks_the_teacher_once_per_chunk(tmp_path: Path, live_settings: Settings,
                                                          ollama_server: serving.Server, base_model: str) -> None:
    s = live_settings.model_copy(update={"data_dir": tmp_path / "data"})
    c = corpora.load(str(make_corpus(tmp_path / "k")), s)
    said: list[str] = []
    items = recipes.build_items(c, ["synthetic"], s, ollama_server, log=said.append)
    assert any("no teacher model set" in m for m in said)
    first = next(m for m in said if m.startswith("synthetic pairs:"))
    assert "(0 chunks from cache" in first and "failed to parse" in first
    assert all(it.kind == "synthetic" and it.question and it.answer for it in items)
    chunk_text = {doc: text for doc, text in recipes._chunks(c, s)}
    assert all(synthetic.grounded(it.answer or "", chunk_text[it.sources[0]]) for it in items)
    # every chunk the teacher answered was appended to the cache as it went: asked again, it is not asked
    answered = len(synthetic._cache_path(c, s, base_model).read_text().splitlines())
    again: list[str] = []
    recipes.build_items(c, ["synthetic"], s, ollama_server, log=again.append)
    assert f"({answered} chunks from cache" in next(m for m in again if m.startswith("synthetic pairs:"))


def test_an_unknown_teacher_is_named_with_the_models_that_would_work(tmp_path: Path, live_settings: Settings,
                                                                     ollama_server: serving.Server) -> None:
    s = live_settings.model_copy(update={"data_dir": tmp_path / "data", "teacher_model": "no-such-teacher"})
    with pytest.raises(TrainingError) as exc:
        synthetic.teacher_model(s, ollama_server)
    assert "no-such-teacher" in str(exc.value) and "qwen2.5-coder-1.5b" in (exc.value.fix or "")


def test_mixed_in_reading_examples_come_from_the_other_corpus_training_questions(tmp_path: Path,
                                                                                 live_settings: Settings) -> None:
    s = live_settings.model_copy(update={"data_dir": tmp_path / "data"})
    demo = corpora.load(str(DEMO), s)
    rag.build_index(demo, s)
    mixed = recipes.mix_items(demo, 30, s)
    assert len(mixed) == 10  # a quarter of 40
    train_questions = {q.question for q in demo.train}
    assert all(it.kind == "mix" and it.question in train_questions and it.system == prompts.RAG_SYSTEM for it in mixed)
    assert not {q.question for q in demo.eval} & {it.question for it in mixed}
    with pytest.raises(CorpusError, match="no qa/train.jsonl"):
        recipes.mix_items(corpora.load(str(make_corpus(tmp_path / "k")), s), 30, s)


def test_a_teacher_whose_server_is_gone_stops_the_run_with_a_fix_and_keeps_its_pairs(
        tmp_path: Path, settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    c = corpora.load(str(make_corpus(tmp_path / "k")), settings)
    chunks = [("harbour", "The harbour master of Kelmouth is Ida Brandt."), ("festival", "The festival is in March.")]
    path = synthetic._cache_path(c, settings, "teacher")
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"key": synthetic._key(chunks[0][1], synthetic.PER_CHUNK), "doc": "harbour",
                                "pairs": [{"question": "Who is the harbour master?", "answer": "Ida Brandt"}]}) + "\n")
    monkeypatch.setattr(synthetic, "teacher_model", lambda *_a, **_k: "teacher")
    dead = serving.Server(url=f"http://127.0.0.1:{procs.free_port()}", pid=None, models_dir=None)  # nothing listens
    with pytest.raises(TrainingError) as exc:
        synthetic.write_pairs(c, chunks, settings, dead)
    assert "stopped answering after 1 of 2 chunks" in str(exc.value) and "cached and reused" in (exc.value.fix or "")
    assert len(path.read_text().splitlines()) == 1  # the cached chunk is still there
