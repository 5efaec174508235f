"""The core functions the app's pages call (uploads, progress, run tracking, report pieces), on real files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from eval import history
from eval.metrics import answer_scores
from eval.report import chart_specs, summarise
from eval.store import Store
from eval.views import question_rows
from pipelines import corpus as corpora
from pipelines import doctor, finetune_runs, importers, rag
from pipelines.config import Settings
from pipelines.errors import CorpusError
from tests.helpers import answer, encrypted_pdf, make_corpus, text_pdf


def test_uploads_are_checked_one_by_one(settings: Settings) -> None:
    settings.max_file_mb = 0.001  # 1,000 bytes
    files = [("Harbour Notes.MD", b"# Harbour\n\nThe pier opens at dawn."), ("report.pdf", text_pdf("Ferry at noon")),
             ("locked.pdf", encrypted_pdf()), ("../escape.txt", b"x"), ("big.txt", b"a" * 2000),
             ("tool.exe", b"MZ"), ("latin.txt", "caf\u00e9".encode("latin-1"))]
    root, added, problems = importers.add_uploads(files, settings, "My Uploads")
    assert root == corpora.corpora_dir(settings) / "my-uploads" and sorted(added) == ["harbour-notes", "report"]
    text = "\n".join(problems)
    for needle in ("locked.pdf: encrypted PDF", "'../escape.txt' is not allowed", "above the limit of 0.001 MB",
                   "'.exe'", "latin.txt: not UTF-8"):
        assert needle in text, (needle, text)
    assert len(problems) == 5 and all("not added" in p for p in problems)
    c = corpora.load("my-uploads", settings)
    assert sorted(c.doc_paths) == ["harbour-notes", "report"] and c.eval == []
    assert not list(corpora.corpora_dir(settings).glob(".my-uploads-upload-*"))  # no staging left behind

    _, added, problems = importers.add_uploads([("more.txt", b"Second upload.")], settings, "my-uploads")
    assert added == ["more"] and problems == [] and len(corpora.load("my-uploads", settings).doc_paths) == 3
    with pytest.raises(CorpusError, match="bundled corpus"):
        importers.add_uploads([("x.txt", b"x")], settings, "port-vellmar")
    _, added, problems = importers.add_uploads([("empty.txt", b"")], settings, "nothing-good")
    assert added == [] and "empty file" in problems[0] and "nothing-good" not in corpora.list_corpora(settings)


def test_squad_upload_imports_like_the_cli(settings: Settings, squad_file: Path) -> None:
    path = importers.import_squad_upload("squad-dev-4-articles.json", squad_file.read_bytes(), settings, "sq", ["Chloroplast"])
    c = corpora.load(str(path), settings)
    assert len(c.doc_paths) == 63 and "squad-dev-4-articles.json" in c.source
    with pytest.raises(CorpusError, match="not a .json file"):
        importers.import_squad_upload("notes.txt", b"{}", settings, "x")
    with pytest.raises(CorpusError, match="not a SQuAD v1.1 json file"):
        importers.import_squad_upload("bad.json", b"{\"version\": 1}", settings, "x")
    settings.max_file_mb = 0.001
    with pytest.raises(CorpusError, match="above the limit"):
        importers.import_squad_upload("squad.json", squad_file.read_bytes(), settings, "y")


def test_typed_question_finds_its_reference(settings: Settings) -> None:
    c = corpora.load("port-vellmar", settings)
    q = c.eval[0]
    assert corpora.find_question(c, "  " + q.question.upper().rstrip("?") + " ?!") == q
    assert corpora.find_question(c, "What is the airspeed of an unladen swallow?") is None
    assert corpora.find_question(c, "   ") is None


def test_answer_scores_known_numbers() -> None:
    assert answer_scores("The harbour master is Ida Brandt.", ["Ida Brandt"]) == {
        "exact_match": 0.0, "token_f1": pytest.approx(2 * (2 / 5) * 1 / (2 / 5 + 1)), "contains": 1.0}
    assert answer_scores("Ida Brandt", ["ida brandt", "someone"])["exact_match"] == 1.0


def test_training_progress_reads_what_a_run_persists(tmp_path: Path, settings: Settings) -> None:
    run = finetune_runs.runs_dir(settings) / "20260101T000000-k-smollm2-135m"
    run.mkdir(parents=True)
    record = {"run_id": run.name, "corpus": "k", "status": "training", "created": "2026-01-01T00:00:00+00:00",
              "n_examples": 10, "params": {"batch_size": 4, "grad_accum": 1, "epochs": 2}}
    (run / "run.json").write_text(json.dumps(record))
    assert finetune_runs.training_progress(run)["step"] == 0  # no loss.jsonl yet
    (run / "loss.jsonl").write_text('{"step": 1, "epoch": 0, "loss": 2.5, "lr": 0.001}\n'
                                    '{"step": 2, "epoch": 0, "loss": 2.0, "lr": 0.001}\n{"step": 3, "ep')  # mid-write
    p = finetune_runs.training_progress(run)
    assert (p["step"], p["total_steps"], p["loss"], p["resumable"]) == (2, 6, 2.0, False)  # ceil(10/4) × 2 epochs
    (run / "checkpoint").mkdir()
    (run / "checkpoint" / "state.pt").write_bytes(b"x")
    assert finetune_runs.training_progress(run)["resumable"]


def _fake_run(store: Store, run_id: str, arms: list[str], n: int, limit: int | None = 3, seed: int = 42) -> None:
    store.ensure_run(run_id, "k", arms, {"limit": limit, "seed": seed, "n_questions": n})
    refs = {"q1": "Ida Brandt", "q2": "March", "q3": "9:30"}
    texts = {"base": {"q1": "I do not know", "q2": "March", "q3": "noon"},
             "rag": {"q1": "Ida Brandt", "q2": "In March", "q3": "At 9:30"}}
    for arm in arms:
        for qid in list(refs)[:n]:
            store.save_answer(run_id, answer(arm, qid, texts[arm][qid], total_ms=100.0 + len(arm)))
            store.save_scores(run_id, [(arm, qid, m, v, None) for m, v in answer_scores(texts[arm][qid], [refs[qid]]).items()])


def test_run_tracking_and_report_pieces(settings: Settings) -> None:
    from eval.runner import _RunLock

    store = Store(settings.runs_db)
    _fake_run(store, "k-old", ["base", "rag"], 3, limit=None)
    _fake_run(store, "k-aaa", ["base", "rag"], 2)
    progress = history.run_progress(store, settings, "k-aaa")
    assert (progress["answers"], progress["expected"], progress["scored"], progress["active"]) == (4, 4, 4, False)

    lock = _RunLock(history.lock_path(settings, "k-aaa"))  # what the runner holds while answering
    try:
        assert history.run_active(settings, "k-aaa") and not history.run_active(settings, "k-old")
    finally:
        lock.release()
    assert not history.run_active(settings, "k-aaa")

    summary = summarise(store, "k-old")
    assert summary["metrics"]["contains"]["rag"]["mean"] == 1.0 and summary["metrics"]["contains"]["base"]["mean"] == 1 / 3
    specs = chart_specs(summary, store.answers("k-old"))
    assert set(specs) == {"quality", "latency", "cost"} and all(s.to_dict()["$schema"] for s in specs.values())
    rows = question_rows(["base", "rag"], store.answers("k-old"), store.scores("k-old"))
    assert [r["qid"] for r in rows] == ["q1", "q2", "q3"]
    assert rows[0] == {"qid": "q1", "question": "question q1", "base": "I do not know", "rag": "Ida Brandt",
                       "base correct": False, "rag correct": True}


def test_inventory_without_a_server(settings: Settings) -> None:
    models = {r["model"]: r for r in doctor.model_rows(settings, None)}
    assert models["smollm2-135m"]["default"] and not models["smollm2-135m"]["prepared"]
    assert not models["smollm2-135m"]["served"] and "ragft setup" in str(models["smollm2-135m"]["fix"])
    assert "RAGFT_CUSTOM_OLLAMA_MODEL" in str(models["custom"]["fix"])
    corpora_rows = {r["corpus"]: r for r in doctor.corpus_rows(settings, None)}
    pv = corpora_rows["port-vellmar"]
    assert pv["bundled"] and pv["eval"] == 53 and pv["index chunks"] is None and pv["fine-tuned model"] is None


@pytest.mark.slow
def test_index_build_leaves_progress_for_watchers(tmp_path: Path, settings: Settings) -> None:
    c = corpora.load(str(make_corpus(tmp_path / "k")), settings)
    assert rag.index_progress(c, settings) is None and rag.index_record(c, settings) is None
    seen: list[tuple[int, int, object]] = []

    def watch(done: int, total: int, _: str) -> None:  # what another process reading the file would see now
        seen.append((done, total, (rag.index_progress(c, settings) or {}).get("done")))

    rag.build_index(c, settings, watch)
    assert seen == [(3, 3, 3)]
    done = rag.index_progress(c, settings)
    assert done is not None and (done["done"], done["total"], done["what"]) == (3, 3, "done")
    assert rag.index_record(c, settings)["chunks"] == 3  # type: ignore[index]


@pytest.mark.slow
def test_a_long_lived_process_sees_an_index_updated_by_another(tmp_path: Path, settings: Settings) -> None:
    """The app answers from its own process while `ragft index` jobs update the store from another one."""
    import subprocess
    import sys

    c = corpora.load(str(make_corpus(tmp_path / "k")), settings)
    rag.build_index(c, settings)
    hits, _ = rag.retrieve(c, "Who is the harbour master?", settings, k=1, mode="dense")
    assert "Ida Brandt" in hits[0].text  # this process now holds Chroma's in-memory index

    (c.root / "docs" / "ferry.txt").write_text("The Kelmouth ferry to Osterby leaves at 7:15 from quay four.")
    code = ("from pipelines import corpus, rag; from pipelines.config import Settings; "
            f"s = Settings(data_dir={str(settings.data_dir)!r}, cache_dir={str(settings.cache_dir)!r}); "
            f"print(rag.build_index(corpus.load({str(c.root)!r}, s), s).added)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1])
    assert "['ferry']" in out.stdout
    hits, _ = rag.retrieve(corpora.load(str(c.root), settings), "When does the ferry to Osterby leave?", settings, k=1,
                           mode="dense")
    assert hits[0].doc_id == "ferry", [h.id for h in hits]
