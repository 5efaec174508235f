"""Corpus folders: validation, document reading, QA sets, SQuAD import, a user's own folder.

A corpus is a folder with `corpus.toml` (name, description, source, license), `docs/`
(md, txt, rst, html, pdf) and `qa/eval.jsonl` (+ optional `qa/train.jsonl`). Loading never
stops at the first bad file: every problem is collected with the file it is about, and the
good files are still used.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from pipelines import files
from pipelines.config import Settings
from pipelines.errors import CorpusError, InputError
from pipelines.files import ensure_dir, safe_stem, unique_name
from pipelines.leakage import normalise
from pipelines.models import safe_name

DOC_SUFFIXES = (".md", ".markdown", ".txt", ".rst", ".html", ".htm", ".pdf")
REQUIRED_META = ("name", "description", "source", "license")
BUNDLED_DIR = Path(__file__).resolve().parents[1] / "corpora"


@dataclass
class QA:
    id: str
    question: str
    answers: list[str]
    source_ids: list[str]
    fact_id: str | None = None
    answer_sentence: str | None = None


@dataclass
class Doc:
    id: str
    path: Path
    text: str
    content_hash: str


@dataclass
class Corpus:
    name: str
    root: Path
    description: str
    source: str
    license: str
    doc_paths: dict[str, Path]
    eval: list[QA]
    train: list[QA]
    retrieval: dict[str, object] = field(default_factory=dict)  # per-corpus [retrieval] overrides
    problems: list[str] = field(default_factory=list)

    def read_docs(self, max_bytes: int) -> tuple[list[Doc], list[str]]:
        """Every readable document, and one message per document that could not be read."""
        docs, problems = [], []
        for doc_id, path in self.doc_paths.items():
            try:
                text = read_document(path, max_bytes)
            except CorpusError as exc:
                problems.append(str(exc))
                continue
            docs.append(Doc(doc_id, path, text, hashlib.sha256(text.encode("utf-8")).hexdigest()))
        return docs, problems


# ---------------------------------------------------------------- documents


def read_document(path: Path, max_bytes: int) -> str:
    """The text of one document, or a CorpusError that names the file and the fix."""
    size = path.stat().st_size
    if size == 0:
        raise CorpusError(f"{path.name}: empty file", "remove it or add its text")
    if size > max_bytes:
        raise CorpusError(f"{path.name}: {size / 1e6:.1f} MB is above the limit of {max_bytes / 1e6:g} MB",
                          "split the file, or raise RAGFT_MAX_FILE_MB")
    suffix = path.suffix.lower()
    if suffix == ".pdf":
        text = _read_pdf(path)
    else:
        raw = path.read_bytes()
        if b"\x00" in raw[:8192]:
            raise CorpusError(f"{path.name}: binary data in a {suffix} file", "give the text itself, or the right extension")
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise CorpusError(f"{path.name}: not UTF-8 (byte 0x{raw[exc.start]:02x} at offset {exc.start})",
                              "re-save the file as UTF-8") from exc
        if suffix in (".html", ".htm"):
            text = _html_text(text)
    if not text.strip():
        raise CorpusError(f"{path.name}: no text in it", "remove it or add its text")
    return text.strip()


def _read_pdf(path: Path) -> str:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(path)
        if reader.is_encrypted and not reader.decrypt(""):
            raise CorpusError(f"{path.name}: encrypted PDF", "give a decrypted copy")
        text = "\n".join(page.extract_text() or "" for page in reader.pages)
    except CorpusError:
        raise
    except (PdfReadError, ValueError, KeyError, TypeError, OSError) as exc:
        raise CorpusError(f"{path.name}: corrupted PDF ({type(exc).__name__}: {exc})", "export the PDF again") from exc
    except Exception as exc:  # pypdf raises assorted errors on broken files; all mean the same to a user
        if "decrypt" in str(exc).lower() or "crypt" in type(exc).__name__.lower():
            raise CorpusError(f"{path.name}: encrypted PDF ({exc})", "give a decrypted copy") from exc
        raise CorpusError(f"{path.name}: corrupted PDF ({type(exc).__name__}: {exc})", "export the PDF again") from exc
    if not text.strip():
        raise CorpusError(f"{path.name}: the PDF has no extractable text (scanned?)", "give a text PDF or its text")
    return text


def _html_text(html: str) -> str:
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(html, "html.parser")
    for tag in soup(["script", "style", "nav", "head"]):
        tag.decompose()
    return "\n".join(line.strip() for line in soup.get_text("\n").splitlines() if line.strip())


def safe_upload_name(name: str) -> str:
    """A file name from outside (an upload) made safe: no directories, no traversal, a known type."""
    if not name or name.startswith(("/", "\\")) or ".." in Path(name.replace("\\", "/")).parts or name.strip(".") == "":
        raise CorpusError(f"file name {name!r} is not allowed", "give a plain file name without directories or '..'")
    if "/" in name or "\\" in name:
        raise CorpusError(f"file name {name!r} contains a directory", "upload the file itself")
    stem, suffix = Path(name).stem, Path(name).suffix.lower()
    if suffix not in DOC_SUFFIXES:
        raise CorpusError(f"file type {suffix or '(none)'!r} of {name!r} is not supported", f"supported: {', '.join(DOC_SUFFIXES)}")
    return safe_stem(stem) + suffix


def _doc_id(rel: Path) -> str:
    return safe_stem(rel.with_suffix("").as_posix().replace("/", "-"))


def scan_docs(docs_dir: Path) -> tuple[dict[str, Path], list[str]]:
    """Doc id → path for every supported file; problems for skipped and duplicate ones."""
    found: dict[str, Path] = {}
    problems: list[str] = []
    inside = docs_dir.resolve()
    for path in sorted(p for p in docs_dir.rglob("*") if p.is_file()):
        rel = path.relative_to(docs_dir)
        if path.name.startswith("."):
            continue
        if path.is_symlink() and not path.resolve().is_relative_to(inside):
            # a link to ~/.aws/credentials would otherwise be copied, indexed and shown
            problems.append(f"{rel}: a link to a file outside the folder ({path.resolve()}); skipped — "
                            "copy the file into the folder if it belongs to the corpus")
            continue
        if path.suffix.lower() not in DOC_SUFFIXES:
            problems.append(f"{rel}: unsupported type '{path.suffix}' skipped (supported: {', '.join(DOC_SUFFIXES)})")
            continue
        doc_id = _doc_id(rel)
        if doc_id in found:
            problems.append(f"{rel}: duplicate doc id '{doc_id}' (also {found[doc_id].relative_to(docs_dir)}); "
                            "skipped — rename one of them")
            continue
        found[doc_id] = path
    return found, problems


# ---------------------------------------------------------------- QA sets


def load_qa(path: Path, doc_ids: set[str] | None = None) -> tuple[list[QA], list[str]]:
    """Rows of a QA jsonl file; bad rows are skipped with a message naming file, line and field."""
    rows: list[QA] = []
    problems: list[str] = []
    seen: set[str] = set()
    if not path.is_file():
        return rows, problems
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise CorpusError(f"{path}: not UTF-8 (byte 0x{exc.object[exc.start]:02x} at offset {exc.start})",
                          "save the QA file as UTF-8") from exc
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path.parent.name}/{path.name} line {lineno}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            problems.append(f"{where}: not JSON ({exc.msg})")
            continue
        if not isinstance(obj, dict):
            problems.append(f"{where}: expected an object")
            continue
        answers = obj.get("answers", [obj["answer"]] if "answer" in obj else None)
        missing = [k for k, v in (("id", obj.get("id")), ("question", obj.get("question")), ("answers", answers),
                                  ("source_ids", obj.get("source_ids"))) if v in (None, "", [])]
        if missing:
            problems.append(f"{where}: missing field(s) {', '.join(missing)}")
            continue
        qid = str(obj["id"])
        if qid in seen:
            problems.append(f"{where}: duplicate id '{qid}' skipped")
            continue
        seen.add(qid)
        sources = [str(s) for s in obj["source_ids"]]
        if doc_ids is not None and (unknown := [s for s in sources if s not in doc_ids]):
            problems.append(f"{where}: unknown source id(s) {', '.join(unknown)}")
        rows.append(QA(qid, str(obj["question"]), [str(a) for a in answers or []], sources,
                       obj.get("fact_id"), obj.get("answer_sentence")))
    return rows, problems


def write_qa(path: Path, rows: list[QA]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for r in rows:
            obj = {"id": r.id, "question": r.question, "answers": r.answers, "source_ids": r.source_ids}
            if r.fact_id:
                obj["fact_id"] = r.fact_id
            if r.answer_sentence:
                obj["answer_sentence"] = r.answer_sentence
            f.write(json.dumps(obj, ensure_ascii=False) + "\n")


# ---------------------------------------------------------------- corpora


def corpora_dir(settings: Settings) -> Path:
    return settings.data_dir.expanduser() / "corpora"


def list_corpora(settings: Settings) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for base in (BUNDLED_DIR, corpora_dir(settings)):
        if base.is_dir():
            for d in sorted(base.iterdir()):
                # dot-folders are an import's staging area (`.squad-xxxx`), never a corpus
                if not d.name.startswith(".") and (d / "corpus.toml").is_file():
                    found.setdefault(d.name, d)
    return found


def resolve(name_or_path: str, settings: Settings) -> Path:
    path = Path(name_or_path).expanduser()
    if (path / "corpus.toml").is_file():
        return path
    known = list_corpora(settings)
    if name_or_path in known:
        return known[name_or_path]
    raise CorpusError(f"'{name_or_path}' is not a known corpus or a corpus folder",
                      f"known corpora: {', '.join(known) or 'none'}; or `ragft corpus add DIR` / `ragft corpus import-squad FILE`")


def load(name_or_path: str, settings: Settings) -> Corpus:
    """Validate and load a corpus; fatal problems raise, the rest are listed in `problems`."""
    root = resolve(name_or_path, settings)
    try:
        meta = tomllib.loads((root / "corpus.toml").read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise CorpusError(f"{root / 'corpus.toml'} is not valid TOML: {exc}", "fix the file") from exc
    if missing := [k for k in REQUIRED_META if not meta.get(k)]:
        raise CorpusError(f"{root / 'corpus.toml'}: missing {', '.join(missing)}", f"give all of {', '.join(REQUIRED_META)}")
    if not (root / "docs").is_dir():
        raise CorpusError(f"{root} has no docs/ folder", "put the documents in docs/")
    doc_paths, problems = scan_docs(root / "docs")
    if not doc_paths:
        raise CorpusError(f"corpus '{meta['name']}' has no documents in {root / 'docs'}",
                          f"add files of a supported type: {', '.join(DOC_SUFFIXES)}")
    ids = set(doc_paths)
    eval_rows, p1 = load_qa(root / "qa" / "eval.jsonl", ids)
    train_rows, p2 = load_qa(root / "qa" / "train.jsonl", ids)
    return Corpus(str(meta["name"]), root, str(meta["description"]), str(meta["source"]), str(meta["license"]),
                  doc_paths, eval_rows, train_rows, dict(meta.get("retrieval", {})), problems + p1 + p2)


def _write_toml(path: Path, meta: dict[str, str]) -> None:
    # atomic: the app may be reading this corpus's corpus.toml while an upload creates it
    files.write_atomic(path, "".join(f"{k} = {json.dumps(v, ensure_ascii=False)}\n" for k, v in meta.items()))


def _publish(staging: Path, target: Path, replace: bool) -> None:
    """Move a finished corpus into place. A corpus it replaces is renamed aside (a dot-folder, never
    listed) before the new one is renamed in, and deleted only after: if the swap fails, the old
    corpus is put back whole."""
    if not target.exists():
        os.replace(staging, target)
        files.fsync_dir(target.parent)
        return
    if not replace:
        raise CorpusError(f"a corpus already exists at {target}", "choose another --name, or pass --replace")
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


def missing_sources(corpus: Corpus, rows: list[QA] | None = None) -> list[QA]:
    """QA rows whose source documents the corpus does not have (retrieval can never find them)."""
    return [q for q in (corpus.eval if rows is None else rows) if any(s not in corpus.doc_paths for s in q.source_ids)]


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
                          "import a subset with --articles from the CLI, or raise RAGFT_MAX_FILE_MB")
    with tempfile.TemporaryDirectory(prefix="ragft-squad-") as tmp:
        path = Path(tmp) / (safe_name(Path(file_name.replace("\\", "/")).stem) + ".json")
        path.write_bytes(data)
        return import_squad(path, settings, name, articles, replace)


def find_question(corpus: Corpus, question: str) -> QA | None:
    """The eval or train question asked with these words (case, spaces and punctuation aside), if any."""
    wanted = normalise(question)
    return next((q for q in [*corpus.eval, *corpus.train] if normalise(q.question) == wanted), None) if wanted else None
