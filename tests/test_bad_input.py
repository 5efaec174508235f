"""Bad input, through the CLI front door: each case gets a message that names the bad value and
the fix, and nothing good is lost (the other documents of a folder are still added).
The app's front door runs the same table in tests/test_app.py and tests/test_browser.py.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from pipelines.config import Settings
from tests.helpers import encrypted_pdf, fake_judge_endpoint, make_corpus, text_pdf
from tests.helpers import run_cli as _run

pytestmark = pytest.mark.guarantee


def _sparse(path: Path, mb: int) -> None:
    with path.open("wb") as f:  # 200 MB on disk costs nothing: a sparse file
        f.truncate(mb * 1024 * 1024)


BAD_DOCUMENTS: dict[str, tuple[Callable[[Path], None], str]] = {
    "empty file": (lambda d: (d / "empty.md").write_text(""), "empty.md: empty file"),
    "binary as text": (lambda d: (d / "blob.txt").write_bytes(b"\x00\x01\x02PK\x03\x04" * 50),
                       "blob.txt: binary data in a .txt file"),
    "non-UTF-8": (lambda d: (d / "latin.txt").write_bytes("Caf\u00e9 au lait".encode("latin-1")),
                  "latin.txt: not UTF-8 (byte 0xe9 at offset 3)"),
    "corrupted PDF": (lambda d: (d / "broken.pdf").write_bytes(text_pdf("hello")[:120]), "broken.pdf: corrupted PDF"),
    "encrypted PDF": (lambda d: (d / "locked.pdf").write_bytes(encrypted_pdf()), "locked.pdf: encrypted PDF"),
    "200 MB file": (lambda d: _sparse(d / "huge.txt", 200), "huge.txt: 209.7 MB is above the limit of 50 MB"),
}


@pytest.mark.parametrize("case", list(BAD_DOCUMENTS))
def test_bad_document_is_named_and_the_rest_is_kept(case: str, tmp_path: Path) -> None:
    make_bad, message = BAD_DOCUMENTS[case]
    folder = tmp_path / "mydocs"
    folder.mkdir()
    (folder / "good.md").write_text("The harbour master of Kelmouth is Ida Brandt.")
    make_bad(folder)
    code, out = _run("corpus", "add", str(folder))
    assert code == 0, out
    assert message in " ".join(out.split()), out
    added = Path(os.environ["RAGFT_DATA_DIR"]) / "corpora" / "mydocs" / "docs"
    assert sorted(p.name for p in added.iterdir()) == ["good.md"]


def test_upload_limit_is_configurable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "mydocs"
    folder.mkdir()
    (folder / "good.md").write_text("The harbour master of Kelmouth is Ida Brandt.")
    (folder / "big.md").write_text("Kelmouth. " * 30_000)  # 0.3 MB
    monkeypatch.setenv("RAGFT_MAX_FILE_MB", "0.1")
    code, out = _run("corpus", "add", str(folder))
    assert code == 0 and "big.md: 0.3 MB is above the limit of 0.1 MB" in " ".join(out.split())


@pytest.mark.parametrize("name", ["../../escape", "/etc/evil", "a/../../b"])
def test_corpus_names_cannot_leave_the_data_dir(name: str, tmp_path: Path) -> None:
    folder = tmp_path / "mydocs"
    folder.mkdir()
    (folder / "good.md").write_text("The harbour master of Kelmouth is Ida Brandt.")
    code, out = _run("corpus", "add", str(folder), "--name", name)
    assert code == 0, out
    corpora = Path(os.environ["RAGFT_DATA_DIR"]) / "corpora"
    made = [p for p in corpora.iterdir() if not p.name.startswith(".")]
    assert len(made) == 1 and made[0].parent == corpora and ".." not in made[0].name
    assert not (tmp_path / "escape").exists() and not Path("/etc/evil").exists()


@pytest.mark.parametrize("name", ["../notes.md", "/etc/passwd.md", "sub/dir.md", "..", "run.sh"])
def test_unsafe_upload_names_are_refused(name: str) -> None:
    from pipelines.corpus_readers import safe_upload_name
    from pipelines.errors import CorpusError

    with pytest.raises(CorpusError) as exc:
        safe_upload_name(name)
    assert repr(name) in exc.value.message and exc.value.fix


QA_PROBLEMS = {
    "missing fields": ([{"id": "q1", "question": "Who?"}], "line 1: missing field(s) answers, source_ids"),
    "duplicate ids": ([{"id": "q1", "question": "Who is the harbour master?", "answers": ["Ida Brandt"],
                        "source_ids": ["harbour"]}] * 2, "line 2: duplicate id 'q1' skipped"),
}


@pytest.mark.parametrize("case", list(QA_PROBLEMS))
def test_bad_qa_rows_are_named_and_the_good_ones_kept(case: str, tmp_path: Path) -> None:
    rows, message = QA_PROBLEMS[case]
    root = make_corpus(tmp_path / "kelmouth", qa=rows)
    code, out = _run("corpus", "show", str(root))
    assert code == 0 and message in " ".join(out.split()), out


def test_qa_file_that_is_not_utf8_is_refused(tmp_path: Path) -> None:
    root = make_corpus(tmp_path / "kelmouth")
    (root / "qa" / "eval.jsonl").write_bytes('{"id": "q1", "question": "Caf\u00e9?"}\n'.encode("latin-1"))
    code, out = _run("corpus", "show", str(root))
    assert code == 1 and "not UTF-8" in out and "save the QA file as UTF-8" in out


@pytest.mark.ollama
@pytest.mark.slow
def test_eval_questions_copied_into_training_are_refused(tmp_path: Path, live_settings: Settings) -> None:
    root = make_corpus(tmp_path / "kelmouth")
    (root / "qa" / "train.jsonl").write_text((root / "qa" / "eval.jsonl").read_text())
    os.environ["RAGFT_CACHE_DIR"] = str(live_settings.cache_dir)
    code, out = _run("finetune", str(root), "--data-dir", str(live_settings.data_dir))
    assert code == 1 and "verbatim" in out and "--allow-leakage" in out


def test_unknown_model_and_arm_names(tmp_path: Path) -> None:
    code, out = _run("ask", "--arm", "rag; ls", "hi")
    assert code == 1 and "'rag; ls'" in out and "ft_rag" in out
    code, out = _run("ask", "--model", "../llama", "hi")
    assert code == 1 and "'../llama'" in out and "smollm2-135m" in out
    code, out = _run("eval", "kelmouth-nope", "--arms", "base")
    assert code == 1 and "'kelmouth-nope'" in out


@pytest.mark.ollama
@pytest.mark.slow
@pytest.mark.parametrize("fault", ["invalid JSON", "timeout"])
def test_judge_endpoint_faults_are_counted_and_shown(fault: str, tmp_path: Path, live_settings: Settings,
                                                    base_model: str, monkeypatch: pytest.MonkeyPatch) -> None:
    root = make_corpus(tmp_path / "kelmouth", qa=[{"id": "q1", "question": "Who is the harbour master of Kelmouth?",
                                                     "answers": ["Ida Brandt"], "source_ids": ["harbour"]}])
    monkeypatch.setenv("RAGFT_CACHE_DIR", str(live_settings.cache_dir))
    monkeypatch.setenv("RAGFT_JUDGE_API_KEY", "sk-test")
    with fake_judge_endpoint() as (url, handler):
        if fault == "timeout":
            handler.delay = 4.0
            monkeypatch.setenv("RAGFT_JUDGE_TIMEOUT_S", "1")
        monkeypatch.setenv("RAGFT_JUDGE_BASE_URL", url)
        code, out = _run("eval", str(root), "--arms", "base", "--judge", "remote-judge", "--out", str(tmp_path / "out"),
                         "--data-dir", str(live_settings.data_dir))
    assert code == 0, out
    flat = " ".join(out.split())
    assert "n/a (1 failed)" in flat  # in the table, per metric
    assert ("judge failures answer_relevancy: 1 ×" in flat) and ("Timeout" in flat if fault == "timeout" else True)
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["metrics"]["answer_accuracy"]["base"]["failures"] == 1
    assert sum(summary["judge_failures"]["answer_relevancy"].values()) == 1


# The app's front door: the same documents and names through the Corpus page's uploader.

def test_bad_uploads_in_the_app_are_named_and_the_rest_is_kept(tmp_path: Path, settings: Settings) -> None:
    from streamlit.testing.v1 import AppTest

    made = tmp_path / "made"
    made.mkdir()
    for make_bad, _ in BAD_DOCUMENTS.values():
        make_bad(made)
    uploads = [(p.name, p.read_bytes(), "application/octet-stream") for p in sorted(made.iterdir())]
    uploads += [("../notes.md", b"escape", "text/markdown"), ("/etc/passwd.md", b"root", "text/markdown"),
                ("sub/dir.md", b"nested", "text/markdown"),
                ("good.md", b"The harbour master of Kelmouth is Ida Brandt.", "text/markdown")]
    page = Path(__file__).resolve().parents[1] / "ui" / "pages" / "corpus.py"
    at = AppTest.from_file(str(page), default_timeout=300).run()
    at.text_input(key="corpus_upload_name").set_value("uploads")
    at.file_uploader(key="corpus_upload_files").set_value(uploads).run()
    at.button(key="corpus_upload_add").click().run()
    assert not at.exception
    shown = " ".join(" ".join(str(el.value) for el in getattr(at, kind)) for kind in ("success", "warning", "error", "info"))
    shown = re.sub(r"\\([!-/:-@\[-`{-~])", r"\1", " ".join(shown.split())).replace("\u2060", "")  # as rendered
    for _, message in BAD_DOCUMENTS.values():
        assert message in shown, message
    # (an unsupported type never gets this far: Streamlit's uploader refuses it by extension)
    for name in ("'../notes.md' is not allowed", "'/etc/passwd.md' is not allowed", "'sub/dir.md' contains a directory"):
        assert name in shown, name
    docs = settings.data_dir / "corpora" / "uploads" / "docs"
    assert sorted(p.name for p in docs.iterdir()) == ["good.md"]
    assert not (settings.data_dir / "corpora" / "notes.md").exists()


def test_an_overlong_question_is_refused_before_anything_starts(tmp_path: Path) -> None:
    code, out = _run("ask", "x" * 2001, "--data-dir", str(tmp_path / "data"))
    flat = " ".join(out.split())
    assert code == 1 and "2,001 characters long, above the limit of 2,000" in flat and "RAGFT_MAX_QUESTION_CHARS" in flat
    assert not (tmp_path / "data" / "server.json").exists()


def test_an_upload_batch_above_the_file_cap_is_refused_whole(settings: Settings) -> None:
    from pipelines import corpus as corpora
    from pipelines import importers
    from pipelines.errors import InputError

    capped = settings.model_copy(update={"max_upload_files": 3})
    with pytest.raises(InputError, match="4 files in one upload, above the limit of 3"):
        importers.add_uploads([(f"n{i}.md", b"text") for i in range(4)], capped, "batch")
    assert not (corpora.corpora_dir(settings) / "batch").exists()


def test_the_app_server_caps_upload_size() -> None:
    import tomllib

    config = tomllib.loads((Path(__file__).resolve().parents[1] / ".streamlit" / "config.toml").read_text())
    assert config["server"]["maxUploadSize"] == 50  # Streamlit's own default would be 200 MB
