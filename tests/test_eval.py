"""Evaluation end to end: real Ollama, real SQLite, real ragas metrics, on the demo corpus."""

import json
from pathlib import Path

import pytest

from eval import scoring
from eval.report import summarise, write_outputs
from eval.runner import EvalConfig, run_eval, select_questions
from eval.store import Store, StoreError
from pipelines import corpus as corpora
from pipelines.arms import kind
from pipelines.config import Settings
from pipelines.errors import CorpusError


def test_metric_failures_are_counted_not_dropped() -> None:
    class Broken:
        name = "broken_judge"

        async def ascore(self, reference: str, response: str) -> object:
            raise ValueError("judge returned {not json")

    class NaNMetric:
        name = "nan_judge"

        async def ascore(self, reference: str, response: str) -> object:
            return type("R", (), {"value": float("nan")})()

    rows = scoring.score_answer("rag", "q1", "Ida Brandt", ["Ida Brandt"], ["harbour"], [{"source": "harbour"}],
                                [Broken(), NaNMetric()])
    by = {r[2]: r for r in rows}
    assert by["contains"][3] == 1.0 and by["retrieval_hit"][3] == 1.0
    assert by["broken_judge"][3] is None and "judge returned {not json" in by["broken_judge"][4]
    assert by["nan_judge"][3] is None and by["nan_judge"][4] == "NaN"


def test_question_sample_is_seeded(settings: Settings) -> None:
    c = corpora.load("port-vellmar", settings)
    a = [q.id for q in select_questions(c, 5, seed=1)]
    assert a == [q.id for q in select_questions(c, 5, seed=1)] and a != [q.id for q in select_questions(c, 5, seed=2)]
    assert len(select_questions(c, None, 1)) == len(c.eval)


def test_damaged_database_is_refused_not_overwritten(tmp_path: Path) -> None:
    db = tmp_path / "runs.sqlite"
    db.write_bytes(b"SQLite format 3\x00" + b"\x13" * 4000)
    with pytest.raises(StoreError, match="damaged") as exc:
        Store(db)
    assert "move it aside" in (exc.value.fix or "")
    assert db.read_bytes().startswith(b"SQLite format 3\x00\x13")


@pytest.mark.slow
@pytest.mark.ollama
def test_four_arm_run_resumes_and_reports(demo_env: tuple[Settings, corpora.Corpus], tmp_path: Path) -> None:
    s, c = demo_env
    store = Store(tmp_path / "runs.sqlite")
    cfg = EvalConfig(["base", "rag", "ft", "ft_rag"], limit=4, seed=7)
    seen: list[int] = []

    def stop_after_five(done: int, total: int, what: str) -> None:
        seen.append(done)
        if what.startswith("answering") and done == 5:
            raise KeyboardInterrupt  # the process dies mid-run

    with pytest.raises(KeyboardInterrupt):
        run_eval(c, cfg, s, store, stop_after_five, log=lambda _: None)
    (run,) = store.runs()
    before = {(a["arm"], a["qid"]): (a["text"], a["created"]) for a in store.answers(run["run_id"])}
    assert 5 <= len(before) <= 6 and run["status"] == "running"  # + the answer in flight, stored

    run_id = run_eval(c, cfg, s, store, log=lambda _: None)
    assert run_id == run["run_id"]  # same arguments → same run, resumed
    answers = store.answers(run_id)
    assert len(answers) == 16 and len({(a["arm"], a["qid"]) for a in answers}) == 16
    for a in answers:  # what was answered before the kill was kept, not recomputed
        if (a["arm"], a["qid"]) in before:
            assert (a["text"], a["created"]) == before[(a["arm"], a["qid"])]
    assert all(a["passages"] for a in answers if a["arm"] in ("rag", "ft_rag"))
    assert all(a["total_ms"] > 0 and a["output_tokens"] > 0 for a in answers)

    summary = summarise(store, run_id, one_off_seconds={"rag": 5.0, "ft": 60.0, "ft_rag": 65.0})
    assert set(summary["metrics"]["contains"]) == {"base", "rag", "ft", "ft_rag"}
    assert {"semantic_similarity", "rouge_score", "bleu_score", "chrf_score", "non_llm_string_similarity",
            "token_f1", "exact_match", "retrieval_hit"} <= set(summary["metrics"])
    assert summary["leakage"]["verbatim"] == 0 and "verbatim" in summary["leakage_statement"]
    # The recommendation follows from the paired table: base's verdict when no arm beats base
    # significantly, else the verdict of one of the arms that do — each of them named in a reason.
    rec = summary["recommendation"]
    better = {p["b"] for p in summary["paired"]
              if p["a"] == "base" and p["metric"] == "contains" and p["significant"] and p["diff"] > 0}
    if not better:
        assert rec["choice"] == kind("base").verdict and "no arm beats the closed-book base model" in rec["reasons"][0]
    else:
        assert rec["choice"] in {kind(a).verdict for a in better}, (rec, better)
        assert all(any(r.startswith(f"{a}: contains") for r in rec["reasons"]) for a in better), rec["reasons"]
    # the forgetting probe: base and the fine-tuned model on the same fixed items (2 per kind in tests)
    probes = store.probes(run_id)
    assert {(r["role"], r["kind"]) for r in probes} == {(r, k) for r in ("base", "ft") for k in ("general", "reading")}
    ft_model = next(a["model"] for a in answers if a["arm"] == "ft")
    assert len(probes) == 8 and {r["model"] for r in probes if r["role"] == "ft"} == {ft_model}
    assert set(summary["forgetting"]) == {"general", "reading"} and all(v["n"] == 2 for v in summary["forgetting"].values())
    # every eval item has a fact class; the demo corpus's training data teaches every eval fact
    split = summary["fact_split"]
    assert split["n"] == {"taught": 4, "not_taught": 0} and set(split["arms"]) == {"base", "rag", "ft", "ft_rag"}
    assert any("states the facts you will be asked about" in r for r in summary["recommendation"]["reasons"])
    paths = write_outputs(store, run_id, summary, tmp_path / "out")
    assert all(p.stat().st_size > 0 for p in paths.values())
    stored = json.loads(paths["summary.json"].read_text())
    page = paths["report.html"].read_text()
    for arm, v in stored["metrics"]["contains"].items():
        assert f"{v['mean']:.3f} <small>[{v['lo']:.3f}, {v['hi']:.3f}]" in page, arm
    assert stored["recommendation"]["choice"] in page and "<svg" in page and "http" not in page.split("<body>")[0]
    assert "Forgetting probe" in page and summary["forgetting"]["reading"]["statement"] in page
    assert "taught (n=4)" in page

    again = run_eval(c, cfg, s, store, log=lambda _: None)  # a finished run is never recomputed
    assert again == run_id and len(store.answers(run_id)) == 16
    assert summarise(store, run_id)["metrics"]["token_f1"] == summary["metrics"]["token_f1"]


def test_eval_refuses_questions_that_cite_documents_the_corpus_lacks(tmp_path: Path, settings: Settings) -> None:
    from tests.helpers import make_corpus

    rows = [{"id": "q1", "question": "Who is the harbour master of Kelmouth?", "answers": ["Ida Brandt"],
             "source_ids": ["harbour"]},
            {"id": "q2", "question": "Who wrote the lost page?", "answers": ["Nobody"], "source_ids": ["lost-page"]}]
    c = corpora.load(str(make_corpus(tmp_path / "k", qa=rows)), settings)
    with pytest.raises(CorpusError, match=r"1 of 2 eval questions .* cite documents it does not have \(lost-page\)") \
            as exc:
        run_eval(c, EvalConfig(arms=["base"]), settings, Store(tmp_path / "runs.sqlite"))
    assert "qa/eval.jsonl" in (exc.value.fix or "")
    assert not (settings.data_dir / "ollama").exists()  # refused before any server was started


def test_rag_arms_without_an_index_fail_before_any_answer(tmp_path: Path, settings: Settings) -> None:
    """Not after the base arm's answers: the run would stop half-way with the fix it could have said first."""
    from tests.helpers import make_corpus

    c = corpora.load(str(make_corpus(tmp_path / "k")), settings)
    with pytest.raises(CorpusError, match="has no index") as exc:
        run_eval(c, EvalConfig(arms=["base", "rag"]), settings, Store(tmp_path / "runs.sqlite"))
    assert "ragft index kelmouth" in (exc.value.fix or "")
    assert not (settings.data_dir / "ollama").exists()  # refused before any server was started


def test_a_changed_index_or_retrieval_config_makes_a_new_run(tmp_path: Path, settings: Settings) -> None:
    """Editing a document and re-indexing must not resume with answers read from the old text."""
    from eval.runner import run_id_for
    from pipelines import rag
    from tests.helpers import make_corpus

    root = make_corpus(tmp_path / "k")
    c = corpora.load(str(root), settings)
    rag.build_index(c, settings)
    ids = {"first": run_id_for(c, EvalConfig(["base", "rag"]), settings, {})}
    base_only = run_id_for(c, EvalConfig(["base"]), settings, {})
    assert run_id_for(c, EvalConfig(["base", "rag"]), settings, {}) == ids["first"]  # nothing changed: resume
    doc = next((root / "docs").iterdir())
    doc.write_text(doc.read_text(encoding="utf-8") + " Amended in 2026.", encoding="utf-8")
    c = corpora.load(str(root), settings)
    assert rag.build_index(c, settings).changed == [doc.stem]
    ids["edited"] = run_id_for(c, EvalConfig(["base", "rag"]), settings, {})
    toml = root / "corpus.toml"
    toml.write_text(toml.read_text() + "\n[retrieval]\nchunk_size = 128\n")
    c = corpora.load(str(root), settings)
    rag.build_index(c, settings)
    ids["rechunked"] = run_id_for(c, EvalConfig(["base", "rag"]), settings, {})
    assert len(set(ids.values())) == 3, ids
    assert run_id_for(c, EvalConfig(["base"]), settings, {}) == base_only  # closed book reads no index
    # a fine-tune served under a name an earlier, deleted model had: its answers are not the old ones
    named = {"ft": "ragft-smollm2-135m-k-ft:q8_0"}
    assert run_id_for(c, EvalConfig(["ft"]), settings, named, ft_run="20261201T000000-k-smollm2-135m") != \
        run_id_for(c, EvalConfig(["ft"]), settings, named, ft_run="20261204T000000-k-smollm2-135m")
