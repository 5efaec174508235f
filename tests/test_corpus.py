"""Corpus folders, document readers, QA validation, SQuAD import (real files, no fakes)."""

import json
from pathlib import Path

import pytest

from pipelines import corpus as corpora
from pipelines import corpus_readers, files, importers
from pipelines.config import Settings
from pipelines.errors import CorpusError
from tests.helpers import encrypted_pdf, make_corpus, text_pdf


def test_loads_a_valid_corpus(tmp_path: Path, settings: Settings) -> None:
    c = corpora.load(str(make_corpus(tmp_path / "k")), settings)
    assert c.name == "kelmouth" and sorted(c.doc_paths) == ["festival", "harbour", "library"]
    assert [q.id for q in c.eval] == ["q1", "q2", "q3"] and c.train == [] and c.problems == []
    docs, problems = c.read_docs(10**6)
    assert problems == []
    html = next(d for d in docs if d.id == "library").text
    assert "opens at 9:30" in html and "var a" not in html


def test_unknown_corpus_lists_known(settings: Settings) -> None:
    with pytest.raises(CorpusError, match="'nope' is not a known corpus") as exc:
        corpora.load("nope", settings)
    assert "port-vellmar" in (exc.value.fix or "")


def test_empty_corpus_is_refused(tmp_path: Path, settings: Settings) -> None:
    root = make_corpus(tmp_path / "k")
    for f in (root / "docs").iterdir():
        f.unlink()
    with pytest.raises(CorpusError, match="no documents"):
        corpora.load(str(root), settings)


def test_missing_metadata_is_named(tmp_path: Path, settings: Settings) -> None:
    root = make_corpus(tmp_path / "k")
    (root / "corpus.toml").write_text('name = "k"\n')
    with pytest.raises(CorpusError, match="description, source, license"):
        corpora.load(str(root), settings)


@pytest.mark.parametrize(
    ("fname", "payload", "needle"),
    [
        ("empty.txt", b"", "empty file"),
        ("blob.txt", b"\x7fELF\x02\x01\x01\x00\x00\x00binary", "binary data"),
        ("latin.txt", "caf\u00e9 cr\u00e8me".encode("latin-1"), "not UTF-8 (byte 0xe9"),
        ("broken.pdf", b"%PDF-1.4\n1 0 obj garbage", "corrupted PDF"),
        ("locked.pdf", None, "encrypted PDF"),
        ("blank.md", b"   \n\n", "no text"),
    ],
)
def test_bad_documents_are_named_and_good_ones_kept(tmp_path: Path, settings: Settings, fname: str,
                                                     payload: bytes | None, needle: str) -> None:
    root = make_corpus(tmp_path / "k")
    (root / "docs" / fname).write_bytes(encrypted_pdf() if payload is None else payload)
    c = corpora.load(str(root), settings)
    docs, problems = c.read_docs(10**6)
    assert sorted(d.id for d in docs) == ["festival", "harbour", "library"]
    assert len(problems) == 1 and fname in problems[0] and needle in problems[0]


def test_text_pdf_is_read(tmp_path: Path) -> None:
    p = tmp_path / "a.pdf"
    p.write_bytes(text_pdf("The ferry leaves at noon"))
    assert "ferry leaves at noon" in corpus_readers.read_document(p, 10**6)


def test_oversized_file_is_refused_without_reading_it(tmp_path: Path) -> None:
    big = tmp_path / "huge.txt"
    with big.open("wb") as f:
        f.truncate(200 * 1024 * 1024)  # sparse: 200 MB on paper, nothing on disk
    with pytest.raises(CorpusError, match=r"209\.7 MB is above the limit of 50 MB") as exc:
        corpus_readers.read_document(big, 50 * 10**6)
    assert "RAGFT_MAX_FILE_MB" in (exc.value.fix or "")


def test_duplicate_doc_ids_and_unsupported_types(tmp_path: Path, settings: Settings) -> None:
    root = make_corpus(tmp_path / "k")
    (root / "docs" / "harbour.md").write_text("another harbour")
    (root / "docs" / "photo.png").write_bytes(b"\x89PNG")
    c = corpora.load(str(root), settings)
    assert c.doc_paths["harbour"].name == "harbour.md"  # sorted order: .md before .txt
    assert any("duplicate doc id 'harbour'" in p for p in c.problems)
    assert any("photo.png: unsupported type" in p for p in c.problems)


def test_bad_qa_rows_are_named(tmp_path: Path, settings: Settings) -> None:
    rows = [
        {"id": "q1", "question": "Who?", "answers": ["Ida"], "source_ids": ["harbour"]},
        {"id": "q2", "question": "Missing answers", "source_ids": ["harbour"]},
        {"id": "q1", "question": "Dup id", "answers": ["x"], "source_ids": ["harbour"]},
        {"id": "q4", "question": "Bad source", "answers": ["x"], "source_ids": ["nowhere"]},
    ]
    root = make_corpus(tmp_path / "k", qa=rows)
    with (root / "qa" / "eval.jsonl").open("a") as f:
        f.write("{not json\n")
    c = corpora.load(str(root), settings)
    assert [q.id for q in c.eval] == ["q1", "q4"]
    joined = "\n".join(c.problems)
    assert "eval.jsonl line 2: missing field(s) answers" in joined
    assert "eval.jsonl line 3: duplicate id 'q1'" in joined
    assert "eval.jsonl line 4: unknown source id(s) nowhere" in joined
    assert "eval.jsonl line 5: not JSON" in joined


@pytest.mark.parametrize("bad", ["../../etc/passwd", "/etc/passwd", "a/../../b.txt", "..", ""])
def test_upload_names_with_paths_are_refused(bad: str) -> None:
    with pytest.raises(CorpusError):
        corpus_readers.safe_upload_name(bad)


def test_upload_names_are_cleaned() -> None:
    assert corpus_readers.safe_upload_name("My Report (final).PDF") == "my-report-final.pdf"


def test_squad_import_round_trip(settings: Settings, squad_file: Path) -> None:
    data = json.loads(squad_file.read_text())["data"]
    n_paragraphs = sum(len(a["paragraphs"]) for a in data)
    questions = {qa["id"] for a in data for p in a["paragraphs"] for qa in p["qas"]}
    path = importers.import_squad(squad_file, settings, "squad")
    c = corpora.load(str(path), settings)
    assert (n_paragraphs, len(questions)) == (130, 593)
    assert len(c.doc_paths) == n_paragraphs
    assert len(c.eval) + len(c.train) == len(questions)
    assert {q.id for q in c.eval} | {q.id for q in c.train} == questions
    assert not {q.id for q in c.eval} & {q.id for q in c.train}
    assert c.problems == [] and c.license == "CC BY-SA 4.0"
    first = (path / "qa" / "eval.jsonl").read_bytes()
    importers.import_squad(squad_file, settings, "squad", replace=True)
    assert (path / "qa" / "eval.jsonl").read_bytes() == first  # deterministic split


def test_squad_import_refuses_overwrite_and_unknown_articles(settings: Settings, tmp_path: Path, squad_file: Path) -> None:
    importers.import_squad(squad_file, settings, "squad", articles=["Chloroplast"])
    with pytest.raises(CorpusError, match="already exists"):
        importers.import_squad(squad_file, settings, "squad")
    with pytest.raises(CorpusError, match="Atlantis") as exc:
        importers.import_squad(squad_file, settings, "other", articles=["Atlantis"])
    assert "Chloroplast" in (exc.value.fix or "")
    bad = tmp_path / "bad.json"
    bad.write_text('{"nope": 1}')
    with pytest.raises(CorpusError, match="not a SQuAD v1.1 json"):
        importers.import_squad(bad, settings, "bad")


def test_add_folder(tmp_path: Path, settings: Settings) -> None:
    src = tmp_path / "mydocs"
    (src / "sub").mkdir(parents=True)
    (src / "a.md").write_text("alpha")
    (src / "sub" / "b.txt").write_text("beta")
    (src / "c.exe").write_bytes(b"MZ")
    path, problems = importers.add_folder(src, settings)
    c = corpora.load("mydocs", settings)
    assert c.root == path and sorted(c.doc_paths) == ["a", "sub-b"] and c.eval == []
    assert any("c.exe" in p for p in problems)


def _squad_file(tmp_path: Path, articles: list[tuple[str, list[str]]]) -> Path:
    data = {"version": "1.1", "data": [
        {"title": title, "paragraphs": [
            {"context": ctx, "qas": [{"id": f"{ai}-{pi}-{k}", "question": f"Question {k} about paragraph {pi}?",
                                      "answers": [{"text": ctx.split()[k], "answer_start": 0}]} for k in range(2)]}
            for pi, ctx in enumerate(paras)]}
        for ai, (title, paras) in enumerate(articles)]}
    path = tmp_path / "shifts.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def test_squad_import_with_long_url_titles_keeps_every_paragraph(tmp_path: Path, settings: Settings) -> None:
    # SQuAD-Shifts' New York Times articles: titles are URLs far longer than a name may be
    urls = [f"https://www.nytimes.com/2019/0{i}/17/business/economy/a-very-long-headline-about-markets-and-"
            f"trade-number-{i}-that-goes-on.html" for i in range(1, 4)]
    paras = [[f"Paragraph {p} of article {i} has words alpha beta gamma." for p in range(n)] for i, n in
             zip(range(3), (4, 5, 4), strict=True)]
    path = importers.import_squad(_squad_file(tmp_path, list(zip(urls, paras, strict=True))), settings, "nyt")
    c = corpora.load(str(path), settings)
    assert len(list((path / "docs").iterdir())) == 13
    assert len(c.doc_paths) == 13 and c.problems == []
    assert all(len(d) <= 80 for d in c.doc_paths)
    assert corpora.missing_sources(c) == [] and len(c.eval) + len(c.train) == 26
    assert {d[-5:] for d in c.doc_paths} >= {"-p000", "-p003", "-p004"}  # the paragraph suffix survives


def test_two_articles_with_one_title_do_not_overwrite_each_other(tmp_path: Path, settings: Settings) -> None:
    file = _squad_file(tmp_path, [("Lens", ["One two three four."]), ("Lens", ["Five six seven eight."])])
    c = corpora.load(str(importers.import_squad(file, settings, "lens")), settings)
    assert sorted(c.doc_paths) == ["lens-2-p000", "lens-p000"]


def test_importer_that_would_lose_documents_fails_naming_them(tmp_path: Path, settings: Settings,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    # break the id scheme for real: every paragraph id collapses to one, as the 80-character cut once did
    monkeypatch.setattr(corpus_readers, "_doc_id", lambda rel: "same-id")
    file = _squad_file(tmp_path, [("Lens", ["One two three four.", "Five six seven eight."])])
    with pytest.raises(CorpusError, match=r"would lose 1 of 2 documents \(lens-p00[01]\)"):
        importers.import_squad(file, settings, "lens")
    assert not (corpora.corpora_dir(settings) / "lens").exists()
    assert [p.name for p in corpora.corpora_dir(settings).iterdir()] == []  # no staging folder left


def test_squad_split_keeps_a_repeated_question_on_one_side(tmp_path: Path, settings: Settings) -> None:
    ctx = "The lens was made in 1733 in London by Chester Hall."
    qas = [("When was the lens made?", "1733"), ("Where was the lens made?", "London"),
           ("When was the lens made?", "in 1733"), ("Who made the lens?", "Chester Hall")]
    data = {"data": [{"title": "Lens", "paragraphs": [{"context": ctx, "qas": [
        {"id": f"q{i}", "question": q, "answers": [{"text": a, "answer_start": 0}]} for i, (q, a) in enumerate(qas)]}]}]}
    file = tmp_path / "dup.json"
    file.write_text(json.dumps(data))
    c = corpora.load(str(importers.import_squad(file, settings, "dup")), settings)
    assert [q.id for q in c.eval] == ["q0", "q2", "q3"] and [q.id for q in c.train] == ["q1"]


def test_file_names_without_ascii_letters_get_stable_ids(tmp_path: Path, settings: Settings) -> None:
    folder = tmp_path / "reports"
    folder.mkdir()
    texts = {"отчёт.md": "Квартальный отчёт.", "!!!.md": "Exclamations only.", "Café.md": "The café opens at 8.",
             "отчёт 2024.md": "Годовой отчёт.", "счёт 2024.md": "Счёт."}
    for name, text in texts.items():
        (folder / name).write_text(text, encoding="utf-8")
    path, problems = importers.add_folder(folder, settings, "reports")
    c = corpora.load(str(path), settings)  # a corpus with such files loads
    assert len(c.doc_paths) == 5 and not problems, (sorted(c.doc_paths), problems)
    assert "cafe" in c.doc_paths
    assert {corpus_readers.read_document(p, 10**6) for p in c.doc_paths.values()} == set(texts.values())
    assert sorted(c.doc_paths) == sorted(corpora.load(str(path), settings).doc_paths)  # stable


def test_uploads_that_clean_alike_are_both_kept_and_named(settings: Settings) -> None:
    path, added, problems = importers.add_uploads([("A B.md", b"first"), ("a b.md", b"second"), ("отчёт.md", b"third")],
                                                settings, "uploads")
    assert sorted(added) == sorted(["a-b", "a-b-2", files.safe_stem("отчёт")]), added
    assert {p.read_text() for p in (path / "docs").iterdir()} == {"first", "second", "third"}
    assert any("'a b.md' is stored as a-b-2.md" in p and "'A B.md'" in p for p in problems), problems


def test_squad_titles_that_clean_alike_keep_their_documents(tmp_path: Path, settings: Settings) -> None:
    file = _squad_file(tmp_path, [("C", ["Alpha beta gamma delta."]), ("C++", ["Epsilon zeta eta theta."]),
                                  ("C#", ["Iota kappa lambda mu."])])
    path = importers.import_squad(file, settings, "langs")
    texts = sorted(p.read_text() for p in (path / "docs").iterdir())
    assert texts == ["Alpha beta gamma delta.", "Epsilon zeta eta theta.", "Iota kappa lambda mu."]


def test_links_out_of_an_added_folder_are_skipped_and_named(tmp_path: Path, settings: Settings) -> None:
    secret = tmp_path / "credentials"
    secret.write_text("aws_secret_access_key = hunter2", encoding="utf-8")
    folder = tmp_path / "docs-in"
    folder.mkdir()
    (folder / "notes.md").write_text("The ferry leaves at 7:15.", encoding="utf-8")
    (folder / "keys.md").symlink_to(secret)
    (folder / "same.md").symlink_to(folder / "notes.md")  # a link inside the folder is an ordinary file
    path, problems = importers.add_folder(folder, settings, "linked")
    c = corpora.load(str(path), settings)
    assert sorted(c.doc_paths) == ["notes", "same"]
    assert any("keys.md" in p and "outside the folder" in p for p in problems), problems
    assert not any("hunter2" in p.read_text() for p in (path / "docs").iterdir())


def test_staging_folders_are_not_corpora(tmp_path: Path, settings: Settings) -> None:
    staging = corpora.corpora_dir(settings) / ".squad-x1y2"
    make_corpus(staging)  # what a killed import leaves behind
    assert ".squad-x1y2" not in corpora.list_corpora(settings)


def test_a_replace_that_fails_half_way_keeps_the_old_corpus(tmp_path: Path, settings: Settings,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    file = _squad_file(tmp_path, [("Lens", ["One two three four."])])
    path = importers.import_squad(file, settings, "lens")
    before = sorted(p.name for p in (path / "docs").iterdir())
    real_replace = os.replace
    calls: list[str] = []

    def fail_moving_the_new_one_in(src: str | Path, dst: str | Path) -> None:
        calls.append(Path(src).name)
        if Path(src).name.startswith(".lens-") and "-old-" not in Path(src).name and Path(dst) == path:
            raise OSError("disk full")
        real_replace(src, dst)

    monkeypatch.setattr(importers.os, "replace", fail_moving_the_new_one_in)
    other = _squad_file(tmp_path, [("Prism", ["Five six seven eight."])])
    with pytest.raises(OSError, match="disk full"):
        importers.import_squad(other, settings, "lens", replace=True)
    assert sorted(p.name for p in (path / "docs").iterdir()) == before  # the old corpus, whole, in its place
    assert [p.name for p in corpora.corpora_dir(settings).iterdir()] == ["lens"]  # nothing aside or staged is left


def test_atomic_writes_reach_the_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pipelines import files

    synced: list[int] = []
    real = files.os.fsync
    monkeypatch.setattr(files.os, "fsync", lambda fd: (synced.append(fd), real(fd))[1])
    files.write_atomic(tmp_path / "x.json", "{}")
    assert len(synced) == 2  # the file's data, then the folder's rename
