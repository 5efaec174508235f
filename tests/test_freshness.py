"""The freshness test: facts changed in a copy (never in the corpus), the copy re-indexed
incrementally, every arm asked the changed questions, a fine-tune on the edited documents timed."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from filelock import FileLock

from eval import freshness, views
from eval.metrics import normalise_answer
from pipelines import corpus as corpora
from pipelines import finetune_runs, rag
from pipelines.config import Settings
from pipelines.errors import CorpusError
from pipelines.train import LoraParams


def test_new_values_are_new_and_never_contain_the_old() -> None:
    rng = random.Random(1)
    for old in ("240 VC", "1788", "Form HB-7", "Ida Brandt", "the old pier", "9:30"):
        new = freshness.new_value(old, rng, taken="")
        assert new and normalise_answer(old) not in normalise_answer(new) and normalise_answer(new) not in normalise_answer(old)
        assert len(new.split()) == len(old.split())


def test_the_copy_states_the_new_values_and_the_corpus_is_untouched(settings: Settings, tmp_path: Path) -> None:
    c = corpora.load("port-vellmar", settings)
    before = freshness.corpus_fingerprint(c.root)
    edits = freshness.plan_edits(c, 20, 7, settings)
    assert len(edits) == 20 and len({e.qid for e in edits}) == 20
    assert edits == freshness.plan_edits(c, 20, 7, settings)  # seeded: the same test again
    copy = freshness.make_copy(c, edits, tmp_path / "fresh-x" / "corpus", settings)
    assert freshness.corpus_fingerprint(c.root) == before
    assert copy.name == "fresh-x" and {q.id: q.answers for q in copy.eval} == {e.qid: [e.new] for e in edits}
    docs = {d.id: d.text for d in copy.read_docs(10**7)[0]}
    for e in edits:
        assert e.new in docs[e.doc_id] and e.old not in docs[e.doc_id]
    untouched = set(c.doc_paths) - {e.doc_id for e in edits}
    assert untouched and all(copy.doc_paths[d].read_bytes() == c.doc_paths[d].read_bytes() for d in untouched)


def test_a_second_process_on_the_same_test_is_refused_before_it_asks_anything(settings: Settings) -> None:
    c = corpora.load("port-vellmar", settings)
    wd = freshness.work_dir(c, 3, 2, settings)
    wd.mkdir(parents=True)
    with FileLock(wd / ".lock"), pytest.raises(CorpusError, match="running in another process") as err:
        freshness.run_freshness(c, settings, n=3, seed=2, arms=["base"], retrain=False)
    assert "same command" in err.value.fix and not (wd / "plan.json").exists()


def test_an_interrupted_retrain_is_continued_not_started_again(settings: Settings, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    run_dir = finetune_runs.runs_dir(settings) / "20261204T101010-fresh-x-smollm2-135m"
    run_dir.mkdir(parents=True)
    (run_dir / "run.json").write_text(json.dumps({"run_id": run_dir.name, "status": "interrupted", "recipes": ["docs"]}))
    begun = tmp_path / "retrain.json"
    begun.write_text(json.dumps({"run_id": run_dir.name}))
    calls: list[dict] = []

    def finetune(*args: object, **kw: object) -> dict:
        calls.append(kw)
        return {"run_id": run_dir.name, "status": "served", "recipes": ["docs"], "ollama_model": "m",
                "training": {"wall_s": 50.0}, "export_s": 5.0, "n_examples": 3}

    monkeypatch.setattr(freshness.ft, "finetune", finetune)
    monkeypatch.setattr(freshness.synthetic, "copy_cache", lambda *a: None)
    c = corpora.load("port-vellmar", settings)
    tuned = freshness._retrain(c, c, settings, None, ["docs"], None, lambda _: None, begun)  # type: ignore[arg-type]
    assert calls[0]["resume_run"] == run_dir.name and tuned["resumed"] and tuned["wall_s"] >= 55.0
    begun.unlink()  # a retrain never begun starts afresh and records its run id when it starts
    freshness._retrain(c, c, settings, None, ["docs"], None, lambda _: None, begun)  # type: ignore[arg-type]
    assert calls[1]["resume_run"] is None and callable(calls[1]["started"])


def test_follows_old_and_neither_are_counted_per_arm() -> None:
    plan = {"corpus": "c", "seed": 0, "edits": [{"qid": "q1", "old": "240 VC", "new": "975 VC"},
                                                {"qid": "q2", "old": "Ida", "new": "Vorkel"}]}
    rows = [{"arm": "rag", "stage": "as is", "qid": "q1", "text": "It costs 975 VC."},
            {"arm": "rag", "stage": "as is", "qid": "q2", "text": "Vorkel"},
            {"arm": "ft", "stage": "as is", "qid": "q1", "text": "240 VC"},
            {"arm": "ft", "stage": "as is", "qid": "q2", "text": "no idea", "error": None}]
    result = freshness.summarise(plan, rows, {"seconds": 2.0, "changed_docs": ["a"], "chunks_embedded": 1,
                                              "chunks_copied": 9}, None, 3.6)
    by = {r["arm"]: r for r in result["arms"]}
    assert by["rag"]["follows"]["mean"] == 1.0 and by["rag"]["catch_up"]["cost"] == pytest.approx(0.002)
    assert by["ft"]["follows"]["mean"] == 0.0 and by["ft"]["still_old"]["mean"] == 0.5 and by["ft"]["neither"] == 1
    assert by["ft"]["catch_up"] is None
    rows_shown = {r["arm"]: r for r in views.freshness_rows(result)}
    assert rows_shown["ft"]["catch-up"].startswith("none yet") and "re-index 1 documents" in rows_shown["rag"]["catch-up"]


@pytest.mark.slow
@pytest.mark.ollama
def test_freshness_run_answers_from_the_copy_and_never_touches_the_original(
        demo_env: tuple[Settings, corpora.Corpus]) -> None:
    s, c = demo_env
    fingerprint = freshness.corpus_fingerprint(c.root)
    index_before = rag.index_record(c, s)
    tuned_before = finetune_runs.latest_run(c.name, s)
    logs: list[str] = []
    result = freshness.run_freshness(c, s, n=3, seed=2, arms=["base", "rag", "ft", "ft_rag"], retrain=True,
                                     recipes=["docs"], params=LoraParams(epochs=1, batch_size=16, checkpoint_every=100),
                                     log=logs.append)
    assert result["original_unchanged"] and freshness.corpus_fingerprint(c.root) == fingerprint
    assert rag.index_record(c, s) == index_before and finetune_runs.latest_run(c.name, s) == tuned_before
    ix = result["index"]
    assert 1 <= len(ix["changed_docs"]) <= 3 and 0 < ix["chunks_embedded"] < ix["chunks_copied"]
    shown = {(r["arm"], r["stage"]): r for r in result["arms"]}
    assert set(shown) == {(a, "as is") for a in ("base", "rag", "ft", "ft_rag")} | {("ft", "retrained"), ("ft_rag", "retrained")}
    assert all(r["n"] == 3 for r in shown.values())
    assert shown[("rag", "as is")]["catch_up"]["seconds"] == ix["seconds"]
    assert shown[("ft", "retrained")]["catch_up"]["seconds"] == pytest.approx(result["finetune"]["wall_s"])
    assert shown[("base", "as is")]["catch_up"] is None
    # the retrained arms answer with the copy's own fine-tune, the others with the original's
    wd = s.data_dir / "freshness" / result["id"]
    rows = [json.loads(x) for x in (wd / "answers.jsonl").read_text().splitlines()]
    models = {(r["arm"], r["stage"]): r["model"] for r in rows}
    assert models[("ft", "as is")] == tuned_before["ollama_model"] and models[("ft", "retrained")] == result["finetune"]["model"]
    # the same test again resumes: nothing is asked, trained or indexed twice
    again = freshness.run_freshness(c, s, n=3, seed=2, arms=["base", "rag", "ft", "ft_rag"], retrain=True,
                                    recipes=["docs"], log=logs.append)
    assert len((wd / "answers.jsonl").read_text().splitlines()) == len(rows)
    assert again["finetune"] == result["finetune"] and again["index"] == ix
    # killed after the retrain was served, before it was recorded: that fine-tune is used, none trained
    (wd / "finetune.json").unlink()
    runs_before = len(finetune_runs.list_runs(s))
    reused = freshness.run_freshness(c, s, n=3, seed=2, arms=["base", "rag", "ft", "ft_rag"], retrain=True,
                                     recipes=["docs"], log=logs.append)
    assert reused["finetune"]["run_id"] == result["finetune"]["run_id"] and reused["finetune"]["resumed"]
    assert len(finetune_runs.list_runs(s)) == runs_before
    assert freshness.latest(c.name, s)["id"] == result["id"]
