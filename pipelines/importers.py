"""Making corpora: a SQuAD v1.1 file, a user's folder, documents uploaded in the app.

Every importer builds the corpus in a staging folder beside its target and moves it into place
whole, so a failed or interrupted import leaves nothing half-written and never touches the
corpus it would replace until the new one is complete.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import tomli_w

from pipelines import files
from pipelines.config import Settings
from pipelines.corpus import BUNDLED_DIR, corpora_dir
from pipelines.corpus_readers import DOC_SUFFIXES, QA, _doc_id, read_document, safe_upload_name, scan_docs, write_qa
from pipelines.errors import CorpusError, InputError, option
from pipelines.files import ensure_dir, safe_stem, unique_name
from pipelines.leakage import normalise
from pipelines.models import safe_name


def _write_toml(path: Path, meta: dict[str, str]) -> None:
    # atomic: the app may be reading this corpus's corpus.toml while an upload creates it
    files.write_atomic(path, tomli_w.dumps(meta))


def _publish(staging: Path, target: Path, replace: bool) -> None:
    """Move a finished corpus into place. A corpus it replaces is renamed aside (a dot-folder, never
    listed) before the new one is renamed in, and deleted only after: if the swap fails, the old
    corpus is put back whole."""
    if not target.exists():
        os.replace(staging, target)
        files.fsync_dir(target.parent)
        return
    if not replace:
        raise CorpusError(f"a corpus already exists at {target}", f"choose another {option('name')}, or pass {option('replace')}")
    aside = Path(tempfile.mkdtemp(prefix=f".{target.name}-old-", dir=target.parent))
    os.replace(target, aside)  # onto the empty folder mkdtemp made: atomic, and the name is ours
    try:
        os.replace(staging, target)
    except BaseException:
        os.replace(aside, target)
        raise
    files.fsync_dir(target.parent)
    shutil.rmtree(aside, ignore_errors=True)


def import_squad(file: Path, settings: Settings, name: str = "squad", articles: list[str] | None = None,
                 replace: bool = False) -> Path:
    """SQuAD v1.1 json → corpus: paragraphs become docs, questions split eval/train within each paragraph."""
    name = safe_name(name)
    try:
        data = json.loads(Path(file).read_text(encoding="utf-8"))["data"]
        titles = [a["title"] for a in data]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CorpusError(f"{file} is not a SQuAD v1.1 json file ({type(exc).__name__}: {exc})",
                          "give the file with data[] → title, paragraphs[] → context, qas[]") from exc
    if articles:
        unknown = [a for a in articles if a not in titles]
        if unknown:
            raise CorpusError(f"article(s) {', '.join(unknown)} not in {file}", f"articles there: {', '.join(titles)}")
        data = [a for a in data if a["title"] in articles]
    target = corpora_dir(settings) / name
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=target.parent))
    try:
        (staging / "docs").mkdir()
        eval_rows: list[QA] = []
        train_rows: list[QA] = []
        written: list[str] = []
        titles_seen: set[str] = set()
        for article in data:
            # two titles that clean alike (C, C++, C#; a title used twice) must not overwrite each other
            title = unique_name(safe_stem(article["title"], 70), titles_seen)
            titles_seen.add(title)
            for p_idx, para in enumerate(article["paragraphs"]):
                doc_id = f"{title}-p{p_idx:03d}"
                (staging / "docs" / f"{doc_id}.txt").write_text(para["context"], encoding="utf-8")
                written.append(doc_id)
                split: dict[str, bool] = {}  # normalised question → eval?
                for qa in para["qas"]:
                    answers = list(dict.fromkeys(a["text"] for a in qa["answers"]))
                    row = QA(str(qa["id"]), qa["question"], answers, [doc_id])
                    # Deterministic split inside each paragraph: every paragraph keeps eval questions,
                    # and the fine-tune sees other questions about the same paragraph. A question
                    # asked twice in one paragraph stays on one side, so the split never leaks.
                    key = normalise(qa["question"])
                    to_eval = split.setdefault(key, sum(split.values()) * 2 <= len(split))
                    (eval_rows if to_eval else train_rows).append(row)
        _check_import(staging / "docs", written, file)
        write_qa(staging / "qa" / "eval.jsonl", eval_rows)
        write_qa(staging / "qa" / "train.jsonl", train_rows)
        _write_toml(staging / "corpus.toml", {
            "name": name,
            "description": f"SQuAD v1.1 dev: {', '.join(a['title'] for a in data)}",
            "source": f"{Path(file).name} (SQuAD v1.1, Rajpurkar et al. 2016; Wikipedia text)",
            "license": "CC BY-SA 4.0",
        })
        _publish(staging, target, replace)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _check_import(docs_dir: Path, written: list[str], source: Path) -> None:
    """An importer whose own documents the corpus would not keep fails, naming what it would lose."""
    found, problems = scan_docs(docs_dir)
    kept = {path.stem for path in found.values()}
    lost = [d for d in written if d not in kept]
    renamed = [d for d in written if d in kept and d not in found]  # its questions would cite a missing id
    if lost or renamed:
        def names(ids: list[str]) -> str:
            return ", ".join(ids[:5]) + (" …" if len(ids) > 5 else "")

        what = ([f"would lose {len(lost)} of {len(written)} documents ({names(lost)})"] if lost else []) + \
               ([f"would give {len(renamed)} documents another id ({names(renamed)})"] if renamed else [])
        raise CorpusError(f"importing {source} {' and '.join(what)}: {'; '.join(problems[:3])}",
                          "report this as a bug in ragft's importer; nothing was written")


def add_folder(folder: Path, settings: Settings, name: str | None = None, replace: bool = False) -> tuple[Path, list[str]]:
    """Copy a user's folder of documents into a new corpus (no QA set needed to index and ask)."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise CorpusError(f"{folder} is not a folder", "give a folder of documents")
    name = safe_name(name or folder.name)
    found, problems = scan_docs(folder)
    for doc_id, path in list(found.items()):  # a document that cannot be read is named now, not at index time
        try:
            read_document(path, int(settings.max_file_mb * 1e6))
        except CorpusError as exc:
            problems.append(f"{exc.message} — skipped ({exc.fix})")
            del found[doc_id]
    if not found:
        raise CorpusError(f"{folder} has no readable documents of a supported type" + "".join(f"\n  {p}" for p in problems),
                          f"supported: {', '.join(DOC_SUFFIXES)}")
    target = corpora_dir(settings) / name
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=target.parent))
    try:
        (staging / "docs").mkdir()
        for doc_id, path in found.items():
            shutil.copy2(path, staging / "docs" / f"{doc_id}{path.suffix.lower()}")
        _write_toml(staging / "corpus.toml", {"name": name, "description": f"documents from {folder}",
                                              "source": str(folder), "license": "as the owner of the documents says"})
        _publish(staging, target, replace)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target, problems


def add_uploads(files: list[tuple[str, bytes]], settings: Settings, name: str) -> tuple[Path, list[str], list[str]]:
    """Put uploaded documents (file name, bytes) into the user corpus `name`, creating it if new.

    Each file gets the checks a corpus folder gets — a safe name of a supported type, the size
    limit, readable text — and a file that fails is named with the reason and left out. Bundled
    corpora are never written to. Returns (corpus folder, doc ids added or replaced, problems).
    """
    name = safe_name(name)
    target = corpora_dir(settings) / name
    if (BUNDLED_DIR / name / "corpus.toml").is_file():
        raise CorpusError(f"'{name}' is a bundled corpus and cannot take uploads", "upload into a corpus of your own name")
    if len(files) > settings.max_upload_files:
        raise InputError(f"{len(files)} files in one upload, above the limit of {settings.max_upload_files}",
                         f"upload them in batches of up to {settings.max_upload_files}, add a whole folder with "
                         "`ragft corpus add FOLDER`, or raise RAGFT_MAX_UPLOAD_FILES")
    max_bytes = int(settings.max_file_mb * 1e6)
    added: list[str] = []
    problems: list[str] = []
    staging = Path(tempfile.mkdtemp(prefix=f".{name}-upload-", dir=ensure_dir(corpora_dir(settings))))
    try:
        ready: list[Path] = []
        names: dict[str, str] = {}  # stored file name → the upload it came from
        for original, data in files:
            try:
                fname = safe_upload_name(original)
                if fname in names:  # `A B.md` and `a b.md` clean alike: keep both, say so
                    stem, suffix = Path(fname).stem, Path(fname).suffix
                    renamed = unique_name(stem, {Path(n).stem for n in names}) + suffix
                    problems.append(f"{original!r} is stored as {renamed}: {names[fname]!r} already takes {fname}")
                    fname = renamed
                names[fname] = original
                if len(data) > max_bytes:  # before writing anything: an oversized upload never touches the disk
                    raise CorpusError(f"{original}: {len(data) / 1e6:.1f} MB is above the limit of {max_bytes / 1e6:g} MB",
                                      "split the file, or raise RAGFT_MAX_FILE_MB")
                path = staging / fname
                path.write_bytes(data)
                read_document(path, max_bytes)
            except CorpusError as exc:
                problems.append(f"{exc.message} — not added" + (f" ({exc.fix})" if exc.fix else ""))
                continue
            ready.append(path)
        if not ready:
            return target, added, problems
        (target / "docs").mkdir(parents=True, exist_ok=True)
        if not (target / "corpus.toml").is_file():
            _write_toml(target / "corpus.toml", {"name": name, "description": "documents uploaded in the ragft app",
                                                 "source": "uploads", "license": "as the owner of the documents says"})
        for path in ready:
            os.replace(path, target / "docs" / path.name)
            added.append(_doc_id(Path(path.name)))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target, added, problems


def import_squad_upload(file_name: str, data: bytes, settings: Settings, name: str = "squad",
                        articles: list[str] | None = None, replace: bool = False) -> Path:
    """`import_squad` for an uploaded file: its bytes, under the size limit, keeping its name as the source."""
    if Path(file_name.replace("\\", "/")).suffix.lower() != ".json":
        raise CorpusError(f"{file_name!r} is not a .json file", "upload the SQuAD v1.1 json file")
    if len(data) > settings.max_file_mb * 1e6:
        raise CorpusError(f"{file_name}: {len(data) / 1e6:.1f} MB is above the limit of {settings.max_file_mb:g} MB",
                          f"import a subset ({option('articles')}), or raise RAGFT_MAX_FILE_MB")
    with tempfile.TemporaryDirectory(prefix="ragft-squad-") as tmp:
        path = Path(tmp) / (safe_name(Path(file_name.replace("\\", "/")).stem) + ".json")
        path.write_bytes(data)
        return import_squad(path, settings, name, articles, replace)
