"""The Streamlit app page by page, headless (AppTest): real settings, real files, real jobs, real Ollama where marked."""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from eval import freshness
from eval.metrics import answer_scores
from eval.store import Store
from pipelines import corpus as corpora
from pipelines import files, finetune_runs, rag, serving
from pipelines.config import Settings
from tests.conftest import SHARED_CACHE
from tests.helpers import answer, encrypted_pdf
from ui import jobs

APP = Path(__file__).resolve().parents[1] / "app.py"
PAGES = ("status", "corpus", "finetune", "compare", "evaluate", "report", "history")
TIMEOUT = 600  # per script run; model loading and answers on 2 busy cores can take minutes — never asserted on


def _app() -> AppTest:
    return AppTest.from_file(str(APP), default_timeout=TIMEOUT)


def _page(name: str) -> AppTest:
    return AppTest.from_file(str(APP.parent / "ui" / "pages" / f"{name}.py"), default_timeout=TIMEOUT)


def _texts(at: AppTest) -> str:
    parts = []
    for kind in ("title", "subheader", "markdown", "caption", "text", "info", "success", "warning", "error", "metric"):
        for el in getattr(at, kind):
            parts.append(str(getattr(el, "value", "")) + " " + str(getattr(el, "label", "")))
    # as a Markdown renderer shows it: a backslash-escaped punctuation mark is the mark itself
    return re.sub(r"\\([!-/:-@\[-`{-~])", r"\1", "\n".join(parts)).replace("\u2060", "")


def _button(at: AppTest, starts_with: str):  # noqa: ANN202 (streamlit's element type)
    found = [b for b in at.button if b.label.startswith(starts_with)]
    assert found, f"no button '{starts_with}…' in {[b.label for b in at.button]}"
    return found[0]


def _wait_job(s: Settings, kind: str, timeout_s: float = 1800) -> jobs.Job:
    """Poll until the newest job of `kind` ends (hang protection only; never a timing assertion)."""
    deadline = time.monotonic() + timeout_s
    while (job := jobs.latest(s, kind)) is None or job.running:
        assert time.monotonic() < deadline, f"{kind} job still running:\n{job.log_tail() if job else ''}"
        time.sleep(0.5)
    return job


@pytest.fixture
def no_ollama(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """No Ollama binary anywhere and no Go to build one: every page must say what to do instead."""
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    monkeypatch.setenv("RAGFT_CACHE_DIR", str(tmp_path / "cache"))
    return Settings(data_dir=tmp_path / "data", cache_dir=tmp_path / "cache")


def test_every_page_runs_and_gives_the_fix_without_ollama(no_ollama: Settings) -> None:
    at = _app().run()
    assert not at.exception
    assert at.title[0].value == "Status" and at.sidebar.selectbox[0].value == "port-vellmar"
    assert ":red[:material/cancel:] **ollama binary**" in _texts(at)
    assert any("ragft setup" in b.label for b in at.button)
    for page in PAGES[1:]:
        at.switch_page(f"ui/pages/{page}.py").run()
        assert not at.exception, page
        text = _texts(at)
        if page in ("compare", "evaluate", "finetune"):
            assert "Ollama is not running" in text and "ragft setup" in text, page
        if page in ("report", "history"):
            assert "No evaluation run yet" in text and "Evaluate" in text, page
    assert not any(b.label.startswith("Start fine-tuning") and not b.disabled for b in at.switch_page(
        "ui/pages/finetune.py").run().button)


def test_sidebar_model_picker_sets_the_model_every_page_uses(no_ollama: Settings) -> None:
    from ui import common

    at = _app().run()
    box = at.sidebar.selectbox(key=common.MODEL_KEY)
    assert box.value == "smollm2-135m" and "qwen2.5-coder-0.5b" in box.options and "custom" not in box.options
    box.set_value("qwen2.5-coder-0.5b").run()
    assert not at.exception
    assert "qwen2.5-coder-0.5b:" in _texts(at)  # the Status page's base-weights check is about the chosen model
    at.switch_page("ui/pages/evaluate.py").run()
    assert not at.exception and at.sidebar.selectbox(key=common.MODEL_KEY).value == "qwen2.5-coder-0.5b"


def test_status_fix_button_runs_setup_as_a_job_whose_log_says_why(no_ollama: Settings) -> None:
    at = _page("status").run()
    _button(at, "Fix ollama binary").click().run()
    assert not at.exception
    job = _wait_job(no_ollama, "setup")
    assert job.status == jobs.FAILED and job.exit_code == 1
    assert "Go is not installed" in job.log_tail()
    at.run()
    assert not at.exception and "failed" in _texts(at)
    assert "Go is not installed" in "\n".join(c.value for c in at.code)  # the panel's log tail
    _button(at, "Fix ollama binary").click().run()  # a second start after it ended is a new job, not a duplicate
    assert len(jobs.list_jobs(no_ollama, "setup")) == 2
    _wait_job(no_ollama, "setup")


def test_corpus_page_uploads_checked_documents(settings: Settings) -> None:
    at = _page("corpus").run()
    assert not at.exception and "port-vellmar" in _texts(at) and "53" in _texts(at)
    at.text_input(key="corpus_upload_name").set_value("handbook")
    at.file_uploader(key="corpus_upload_files").set_value([
        ("Opening Hours.md", b"# Hours\n\nThe town hall opens at 8:00.", "text/markdown"),
        ("locked.pdf", encrypted_pdf(), "application/pdf"),
    ]).run()
    at.button(key="corpus_upload_add").click().run()
    assert not at.exception
    text = _texts(at)
    assert "added 1 document(s) to handbook: opening-hours" in text and "locked.pdf: encrypted PDF" in text
    assert sorted(corpora.load("handbook", settings).doc_paths) == ["opening-hours"]


def test_corpus_page_imports_squad_and_browses_it(settings: Settings, squad_file: Path) -> None:
    squad = squad_file
    at = _page("corpus").run()
    at.file_uploader(key="corpus_squad_file").set_value((squad.name, squad.read_bytes(), "application/json"))
    at.text_input(key="corpus_squad_name").set_value("sq")
    at.text_input(key="corpus_squad_articles").set_value("Chloroplast").run()
    at.button(key="corpus_squad_import").click().run()
    assert not at.exception and "imported sq: 63 docs" in _texts(at)
    at.button(key="corpus_squad_import").click().run()  # again, into the corpus it just made
    refused = re.sub(r"\\([!-/:-@\[-`{-~])", r"\1", " ".join(e.value for e in at.error))  # as rendered
    # the fix names the page's own field, not the CLI's flag
    assert "a corpus already exists" in refused and "Replace a corpus of that name" in refused, refused
    assert "--replace" not in refused and "--name" not in refused
    at.session_state["app_corpus"] = "sq"  # what the sidebar picker does
    at.run()
    assert not at.exception and "SQuAD v1.1 dev: Chloroplast" in _texts(at)
    at.radio(key="corpus_qa_set").set_value("train").run()
    assert not at.exception and len(at.dataframe[-1].value) == len(corpora.load("sq", settings).train)


@pytest.mark.slow
def test_corpus_page_builds_the_index_as_a_job_with_progress(settings: Settings) -> None:
    at = _page("corpus").run()
    at.button(key="corpus_index").click().run()
    assert not at.exception and "index port-vellmar" in _texts(at)
    job = _wait_job(settings, "index")
    assert job.status == jobs.DONE, job.log_tail()
    at.run()
    assert not at.exception
    assert at.get("progress")[0].value == 100 and "done: 30 of 30" in at.get("progress")[0].proto.text
    record = rag.index_record(corpora.load("port-vellmar", settings), settings)
    assert record is not None and int(record["chunks"]) > 0
    assert at.button(key="corpus_index").label.startswith("Update the index")


@pytest.mark.slow
def test_finetune_page_shows_the_leakage_report_before_starting(no_ollama: Settings) -> None:
    at = _page("finetune").run()
    assert not at.exception
    metrics = {m.label: m.value for m in at.metric}
    assert (metrics["verbatim"], metrics["near-verbatim"], metrics["paraphrase coverage"]) == ("0", "0", "34")
    assert at.button(key="ft_start").disabled  # no server: the fix is shown instead
    assert "Ollama is not running" in _texts(at)
    assert at.selectbox(key="ft_mix").options[0] == "(none)" and not [b for b in at.selectbox if b.key == "ft_teacher"]
    at.multiselect(key="ft_recipes").set_value(["synthetic-raft"]).run()  # the documents-only track
    assert not at.exception and "qwen2.5-coder-1.5b" in at.selectbox(key="ft_teacher").options
    assert "written by the teacher during the job" in _texts(at)


def _fake_runs(s: Settings) -> None:
    """Two stored runs with known answers (what the runner writes), for the report and history pages."""
    with contextlib.closing(Store(s.runs_db)) as store:
        refs = {"q1": "Ida Brandt", "q2": "March", "q3": "9:30"}
        for run_id, texts in (("kelmouth-run1", {"base": ["no idea", "March", "noon"], "rag": ["Ida Brandt", "in March", "9:30"]}),
                              ("kelmouth-run2", {"base": ["no idea", "May", "noon"], "rag": ["Ida Brandt", "March", "at 9"]})):
            store.ensure_run(run_id, "kelmouth", ["base", "rag"], {"limit": None, "seed": 42, "n_questions": 3})
            for arm, answers in texts.items():
                for (qid, ref), text in zip(refs.items(), answers, strict=True):
                    store.save_answer(run_id, answer(arm, qid, text, retrieval_ms=2.0, ttft_ms=50.0, prompt_tokens=9,
                                                     total_ms=300.0 if arm == "rag" else 200.0, output_tokens=5,
                                                     eval_ms=50.0))
                    store.save_scores(run_id, [(arm, qid, m, v, None) for m, v in answer_scores(text, [ref]).items()])
            store.set_status(run_id, "done", {})


def test_report_and_history_pages_on_stored_runs(settings: Settings) -> None:
    _fake_runs(settings)
    at = _page("report").run()
    assert not at.exception
    assert at.selectbox(key="report_run").value == "kelmouth-run2"  # the newest finished run
    text = _texts(at)
    assert "Recommendation:" in text and "Every question" in text
    assert len(at.get("vega_lite_chart")) == 3  # quality with CIs, latency, cost vs volume
    assert {b.label for b in at.get("download_button")} == {"report.html", "answers.csv", "scores.csv", "summary.json"}
    assert (settings.data_dir / "reports" / "kelmouth-run2" / "report.html").stat().st_size > 0
    at.selectbox(key="report_run").set_value("kelmouth-run1").run()
    assert not at.exception
    metrics = at.dataframe[0].value
    assert "1.000 [1.000, 1.000]" in metrics.to_string()  # rag contains every reference in run 1

    at = _page("history").run()
    assert not at.exception
    assert set(at.dataframe[0].value["run"]) == {"kelmouth-run1", "kelmouth-run2"}
    changes = at.dataframe[1].value
    row = changes[(changes["metric"] == "contains") & (changes["arm"] == "base")].iloc[0]
    assert (row["A"], row["B"]) == pytest.approx((1 / 3, 0.0))


def test_report_page_shows_the_corpus_freshness_test(settings: Settings) -> None:
    _fake_runs(settings)
    at = _page("report").run()
    assert not at.exception and "No freshness test of corpus kelmouth yet" in _texts(at)
    plan = {"corpus": "kelmouth", "seed": 0, "edits": [{"qid": "q1", "old": "Ida Brandt", "new": "Ida Vorkel"}]}
    result = freshness.summarise(plan, [{"arm": "rag", "stage": "as is", "qid": "q1", "text": "Ida Vorkel"}],
                                 {"seconds": 1.5, "changed_docs": ["harbour"], "chunks_embedded": 1, "chunks_copied": 3},
                                 None, 0.1)
    files.write_json(settings.data_dir / "freshness" / "kelmouth-fresh-1" / "result.json",
                     {**result, "id": "kelmouth-fresh-1", "finished": 1.0, "original_unchanged": True})
    at = _page("report").run()
    assert not at.exception and "the original corpus verified unchanged" in _texts(at)
    table = next(d.value for d in at.dataframe if "follows the edit" in d.value.columns)
    assert table.iloc[0]["follows the edit"] == "1.00 [1.00, 1.00]" and "re-index 1 documents" in table.iloc[0]["catch-up"]


# ------------------------------------------------------------------ with a real Ollama


@pytest.fixture
def live_env(monkeypatch: pytest.MonkeyPatch, ollama_server: serving.Server) -> Iterator[None]:
    """The session's Ollama for every page and job (as a server the user runs), and the shared weights cache."""
    monkeypatch.setenv("RAGFT_OLLAMA_HOST", ollama_server.url)
    monkeypatch.setenv("RAGFT_CACHE_DIR", str(SHARED_CACHE))
    yield


@pytest.mark.ollama
def test_compare_shows_the_fix_for_arms_that_are_not_ready(live_env: None, base_model: str) -> None:
    at = _page("compare").run()
    assert not at.exception
    at.button(key="cmp_ask").click().run()
    assert not at.exception
    text = _texts(at)
    assert "Reference answer:" in text and "ragft finetune port-vellmar" in text and "ragft index" in text
    assert [h.value for h in at.subheader] == ["base", "rag", "ft", "ft_rag"]
    assert text.count("tokens/s") == 1  # base answered, with its timings


@pytest.mark.ollama
@pytest.mark.slow
def test_compare_answers_with_all_four_arms(demo_env: tuple[Settings, corpora.Corpus], live_env: None,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    s, c = demo_env
    monkeypatch.setenv("RAGFT_DATA_DIR", str(s.data_dir))
    at = _page("compare").run()
    at.radio(key="cmp_mode").set_value("Type a question").run()
    at.text_input(key="cmp_question").set_value(c.eval[0].question.upper()).run()  # typed, yet the reference is found
    at.button(key="cmp_ask").click().run()
    assert not at.exception and not at.error
    assert [h.value for h in at.subheader] == ["base", "rag", "ft", "ft_rag"]
    text = _texts(at)
    assert text.count("tokens/s") == 4 and text.count("first token") == 4
    assert len([e for e in at.expander if "retrieved passages" in e.label]) == 2  # rag and ft_rag
    assert f"Reference answer:** {' | '.join(c.eval[0].answers)}" in text
    assert text.count("token F1") == 4
    results = at.session_state["cmp_last"]["results"]
    assert all(results[a]["text"] for a in ("base", "rag", "ft", "ft_rag"))
    assert all(p["source"] in c.doc_paths for a in ("rag", "ft_rag") for p in results[a]["passages"])
    at.run()  # a rerun shows the stored answers; nothing is asked again
    assert at.session_state["cmp_last"]["results"] == results


@pytest.mark.ollama
@pytest.mark.slow
def test_evaluate_runs_as_a_job_and_the_report_opens(demo_env: tuple[Settings, corpora.Corpus], live_env: None,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    s, _ = demo_env
    monkeypatch.setenv("RAGFT_DATA_DIR", str(s.data_dir))
    at = _page("evaluate").run()
    assert not at.exception and not at.info  # every arm ready
    at.multiselect(key="eval_arms").set_value(["base", "rag"])
    at.number_input(key="eval_limit").set_value(2)
    at.number_input(key="eval_seed").set_value(11).run()
    at.button(key="eval_start").click().run()
    assert not at.exception and "evaluate port-vellmar · arms base, rag · limit 2 · seed 11" in _texts(at)
    assert at.button(key="eval_start").disabled  # one evaluation at a time from this page
    job = _wait_job(s, "evaluate")
    assert job.status == jobs.DONE, job.log_tail(60)
    at.run()
    assert not at.exception and "done" in _texts(at)
    assert at.get("progress")[0].value == 100
    with contextlib.closing(Store(s.runs_db)) as store:
        run = next(r for r in store.runs() if r["arms"] == ["base", "rag"] and r["n_answers"] == 4)
    assert at.session_state["report_run"] == run["run_id"] == job.produced  # recorded by the job, not guessed
    at = _page("report")
    at.session_state["report_run"] = run["run_id"]
    at.run()
    assert not at.exception and "Recommendation:" in _texts(at)


@pytest.mark.ollama
@pytest.mark.slow
def test_finetune_job_cancels_and_resumes(live_env: None, base_model: str, settings: Settings) -> None:
    at = _page("finetune").run()
    assert not at.exception
    at.multiselect(key="ft_recipes").set_value(["qa"]).run()  # the short recipe (raft,replay is the default with an index)
    at.number_input(key="ft_epochs_5").set_value(1)  # a key per recipe default: qa's 5 epochs, batch 8
    at.number_input(key="ft_batch_8").set_value(16)
    at.number_input(key="ft_ckpt").set_value(1).run()
    at.button(key="ft_start").click().run()
    assert not at.exception
    job = jobs.latest(settings, "finetune")
    assert job is not None and job.running and job.args["checkpoint_every"] == 1 and job.args["recipes"] == ["qa"]
    deadline = time.monotonic() + 1800  # hang protection only
    while not ((produced := jobs.get(settings, job.id).produced)
               and finetune_runs.training_progress(finetune_runs.runs_dir(settings) / produced)["resumable"]):
        assert time.monotonic() < deadline and jobs.get(settings, job.id).running, jobs.get(settings, job.id).log_tail()
        time.sleep(1)
    run = {"run_id": produced}
    at.run()
    assert not at.exception and "step" in _texts(at) and len(at.get("vega_lite_chart")) == 1  # live loss chart
    at.button(key=f"ft_job_cancel_{job.id}").click().run()
    assert not at.exception
    assert jobs.get(settings, job.id).status == jobs.CANCELLED
    at.run()
    resume = at.button(key=f"ft_resume_{run['run_id']}")
    resume.click().run()
    assert not at.exception
    resumed = jobs.latest(settings, "finetune")
    assert resumed is not None and resumed.id != job.id and resumed.args["resume"] == run["run_id"]
    assert _wait_job(settings, "finetune").status == jobs.DONE, resumed.log_tail(60)
    record = finetune_runs.load_run(finetune_runs.runs_dir(settings) / run["run_id"])
    assert record["status"] == "served" and record["training"]["steps"] == record["training"]["total_steps"]
