"""The raft recipe: training questions in the rag arm's own prompt, with and without the gold passage."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from pipelines import corpus as corpora
from pipelines import distill, prompts, rag, recipes, serving
from pipelines import finetune as ft
from pipelines.arms import get_arm
from pipelines.config import Settings
from pipelines.corpus import QA
from pipelines.raft import raft_examples
from pipelines.rag import Hit
from pipelines.train import LoraParams, TrainingError

DEMO = Path(__file__).resolve().parents[1] / "corpora" / "port-vellmar"


def _pool(question: str, n: int) -> list[Hit]:
    """Ranked chunks: the answer ('Ida Brandt') sits in the 5th, never in the top 3."""
    hits = [Hit(f"d{i}#0", f"d{i}", f"Kelmouth note {i}: the tide is high at noon.", 1.0 - i / 10) for i in range(8)]
    hits[4] = Hit("harbour#0", "harbour", "The harbour master of Kelmouth is Ida Brandt.", 0.6)
    return hits[:n]


QUESTIONS = [QA(f"t{i}", f"Who runs the harbour ({i})?", ["Ida Brandt"], ["harbour"]) for i in range(50)]


def test_gold_passage_is_shown_for_the_share_and_swapped_in_when_retrieval_missed_it() -> None:
    everything = raft_examples(QUESTIONS, _pool, k=3, share=1.0)
    assert all(e.gold_shown and "harbour#0" in e.passages and len(e.passages) == 3 for e in everything)
    assert all(e.passages[:2] == ("d0#0", "d1#0") for e in everything)  # the k-th gave way to the gold chunk
    nothing = raft_examples(QUESTIONS, _pool, k=3, share=0.0)
    assert not any(e.gold_shown or "Ida Brandt" in e.prompt for e in nothing)
    assert all(e.answer == "Ida Brandt" for e in everything + nothing)  # the reference, with or without it
    mixed = raft_examples(QUESTIONS, _pool, k=3, share=0.8, seed=1)
    assert 0.6 < sum(e.gold_shown for e in mixed) / len(mixed) < 0.95
    assert mixed == raft_examples(QUESTIONS, _pool, k=3, share=0.8, seed=1)  # seeded
    with pytest.raises(ValueError):
        raft_examples(QUESTIONS, _pool, k=3, share=1.5)


def test_raft_quote_targets_the_sentence_holding_the_answer_with_or_without_its_passage() -> None:
    def pool(question: str, n: int) -> list[Hit]:
        hits = _pool(question, n)
        if len(hits) > 4:
            hits[4] = Hit("harbour#0", "harbour", "Kelmouth has one harbour.  Its master is Ida Brandt, since 2019. "
                                                  "She keeps the tide tables.", 0.6)
        return hits

    shown = raft_examples(QUESTIONS[:5], pool, k=3, share=1.0, answer_form="quote")
    hidden = raft_examples(QUESTIONS[:5], pool, k=3, share=0.0, answer_form="quote")
    assert {e.answer for e in shown + hidden} == {"Its master is Ida Brandt, since 2019."}
    assert not any("Ida Brandt" in e.prompt for e in hidden)  # from memory when its passage is not shown
    # no chunk holds it: the corpus's own answer sentence, else the short reference
    lost = [QA("x1", "Who?", ["Olav Berg"], ["harbour"], answer_sentence="Olav Berg runs it."),
            QA("x2", "Who else?", ["Olav Berg"], ["harbour"])]
    assert [e.answer for e in raft_examples(lost, pool, k=3, answer_form="quote")] == ["Olav Berg runs it.", "Olav Berg"]
    assert [e.prompt for e in shown] == [e.prompt for e in raft_examples(QUESTIONS[:5], pool, k=3, share=1.0)]
    with pytest.raises(ValueError, match="answer form"):
        raft_examples(QUESTIONS, _pool, k=3, answer_form="essay")


def test_the_prompt_is_the_rag_arms_prompt() -> None:
    (e,) = raft_examples(QUESTIONS[:1], _pool, k=3, share=1.0)
    hits = {h.id: h for h in _pool("", 8)}
    assert e.prompt == prompts.build_prompt(e.question, [hits[i] for i in e.passages])


@pytest.mark.slow
def test_a_chat_example_longer_than_max_length_is_an_error_not_a_cut_answer(tmp_path: Path,
                                                                             live_settings: Settings) -> None:
    from transformers import AutoTokenizer

    from pipelines import models

    base = models.ensure_hf_weights(models.get_spec("smollm2-135m", live_settings), live_settings)
    tok = AutoTokenizer.from_pretrained(base)
    long = recipes.TrainItem("raft", "Who?", "Ida Brandt", prompt="Context:\n" + "tide " * 400 + "\nQuestion: Who?")
    with pytest.raises(TrainingError, match="longer than max_length 256") as err:
        recipes.tokenize([long], tok, 256)
    assert "--max-length" in (err.value.fix or "")
    (ex,) = recipes.tokenize([long], tok, recipes.RAFT_MAX_LENGTH)
    assert sum(x != -100 for x in ex.labels) >= 3  # the answer tokens carry the loss


@pytest.mark.slow
@pytest.mark.ollama
def test_raft_trains_on_the_demo_corpus_serves_and_answers_with_passages(
        tmp_path: Path, live_settings: Settings, ollama_server: serving.Server, base_model: str) -> None:
    s = live_settings.model_copy(update={"data_dir": tmp_path / "data"})
    root = Path(shutil.copytree(DEMO, tmp_path / "port-vellmar"))
    train = (root / "qa" / "train.jsonl").read_text(encoding="utf-8").splitlines()
    (root / "qa" / "train.jsonl").write_text("\n".join(train[:8]) + "\n", encoding="utf-8")  # a few steps
    c = corpora.load(str(root), s)
    with pytest.raises(Exception, match="index"):  # raft reads from the corpus's own index
        recipes.build_items(c, ["raft"], s)
    rag.build_index(c, s)
    items = recipes.build_items(c, ["raft"], s)
    assert len(items) == 8 and all(it.system == prompts.RAG_SYSTEM for it in items)
    for it in items:  # the user turn is what the rag arm would send for this question
        hits, _ = rag.retrieve(c, it.question or "", s)
        assert it.prompt and it.prompt.startswith("Context:\n[") and it.prompt.endswith(f"Question: {it.question}\nAnswer:")
        if all(q in it.prompt for q in [h.text for h in hits]):
            assert it.prompt == prompts.build_prompt(it.question or "", hits)
    record = ft.finetune(c, s, ollama_server, ["raft"], LoraParams(epochs=1, batch_size=4,
                                                                    max_length=recipes.RAFT_MAX_LENGTH))
    assert record["status"] == "served" and record["training"]["steps"] == 2
    answer = get_arm("ft_rag", s, ollama_server, c).answer(c.eval[0].question)
    assert answer.model == record["ollama_model"] and answer.text.strip() and len(answer.passages) == s.top_k


def test_raft_self_keeps_the_base_models_answer_only_when_it_is_right_and_complete() -> None:
    refs = ["Ida Brandt"]
    assert distill.pick_target(" The harbour master is Ida Brandt. ", True, refs, "Ida Brandt") == \
        "The harbour master is Ida Brandt."
    assert distill.pick_target("I don't know.", True, refs, "Ida Brandt") == "Ida Brandt"  # wrong: the reference
    assert distill.pick_target("It is Ida Brandt and", False, refs, "Ida Brandt") == "Ida Brandt"  # cut at max_tokens
    assert distill.pick_target("6 6 6 6 6 6 6 6 6", True, ["6"], "six") == "six"  # degenerate output is never a target
    assert distill.pick_target("Ida Brandtson", True, refs, "Ida Brandt") == "Ida Brandt"  # whole words only


@pytest.mark.slow
@pytest.mark.ollama
def test_self_distilled_targets_are_the_base_models_own_words_asked_once(
        tmp_path: Path, live_settings: Settings, ollama_server: serving.Server, base_model: str) -> None:
    from pipelines import generation

    s = live_settings.model_copy(update={"data_dir": tmp_path / "data"})
    root = Path(shutil.copytree(DEMO, tmp_path / "port-vellmar"))
    train = (root / "qa" / "train.jsonl").read_text(encoding="utf-8").splitlines()
    (root / "qa" / "train.jsonl").write_text("\n".join(train[:6]) + "\n", encoding="utf-8")
    c = corpora.load(str(root), s)
    rag.build_index(c, s)
    said: list[str] = []
    items = recipes.build_items(c, ["raft-self"], s, ollama_server, log=said.append)
    plain = recipes.build_items(c, ["raft"], s)
    assert [(i.prompt, i.system) for i in items] == [(p.prompt, p.system) for p in plain]  # raft's prompts exactly
    wrong: list[int] = []
    for i, (it, p, qa) in enumerate(zip(items, plain, c.train, strict=True)):
        gen = generation.generate(ollama_server, s, base_model, it.prompt or "", prompts.RAG_SYSTEM)
        own = gen.text.strip()
        right = distill.pick_target(own, gen.done_reason == "stop", qa.answers, p.answer or "") == own
        wrong += [] if right else [i]
        assert it.answer == (own if right else p.answer)  # the base model's answer where right, else the reference
    assert any("raft-self:" in m and "6 asked" in m for m in said), said
    again: list[str] = []
    assert recipes.build_items(c, ["raft-self"], s, ollama_server, log=again.append) == items
    assert any("0 asked, 6 from cache" in m for m in again), again  # a repeated fine-tune asks nothing again
    with pytest.raises(TrainingError, match="needs the Ollama server"):
        recipes.build_items(c, ["raft-self"], s)
    assert recipes.preview_recipes(["raft-self", "raft-sdft", "synthetic", "qa", "replay"]) == ["raft", "qa"]

    # raft-sdft: the same own answers (from the cache), and where they were wrong, the base model's
    # rewording of the reference when it holds the reference.
    sdft_said: list[str] = []
    sdft = recipes.build_items(c, ["raft-sdft"], s, ollama_server, log=sdft_said.append)
    assert any("raft-sdft:" in m and f"{len(wrong)} asked, 6 from cache" in m for m in sdft_said), sdft_said
    for i, (it, self_it, p, qa) in enumerate(zip(sdft, items, plain, c.train, strict=True)):
        assert it.kind == "raft-sdft" and it.prompt == p.prompt
        if i not in wrong:
            assert it.answer == self_it.answer
            continue
        gen = generation.generate(ollama_server, s, base_model, distill.rewrite_prompt(p.prompt or "", p.answer or ""),
                                  prompts.RAG_SYSTEM)
        assert it.answer == distill.pick_target(gen.text, gen.done_reason == "stop", qa.answers, p.answer or "")

    # replay: the same questions closed book, in the base arm's prompt; the target is whatever the
    # base model answers there, dropped only when cut at max_tokens.
    replay_said: list[str] = []
    replay = recipes.build_items(c, ["replay"], s, ollama_server, log=replay_said.append)
    expected: list[tuple[str, str]] = []
    for qa in c.train:
        gen = generation.generate(ollama_server, s, base_model, qa.question, prompts.CLOSED_BOOK_SYSTEM)
        if gen.done_reason == "stop" and gen.text.strip():
            expected.append((qa.question, gen.text.strip()))
    assert [(it.question, it.answer) for it in replay] == expected
    assert all(it.kind == "replay" and it.prompt is None and it.system is None for it in replay)  # closed book
    assert any("replay:" in m and "6 asked" in m for m in replay_said), replay_said
    again.clear()
    assert recipes.build_items(c, ["replay"], s, ollama_server, log=again.append) == replay
    assert any("0 asked, 6 from cache" in m for m in again), again
