"""Reading a corpus's files: documents (md, txt, rst, html, pdf) and QA sets (jsonl).

Reading never stops at the first bad file: every problem is returned with the file it is
about, and the good files are still used.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from pipelines.errors import CorpusError
from pipelines.files import safe_stem

DOC_SUFFIXES = (".md", ".markdown", ".txt", ".rst", ".html", ".htm", ".pdf")


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
