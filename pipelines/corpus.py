"""Corpus folders: what a corpus is, where corpora live, and loading one with its problems listed.

A corpus is a folder with `corpus.toml` (name, description, source, license), `docs/`
(md, txt, rst, html, pdf) and `qa/eval.jsonl` (+ optional `qa/train.jsonl`). Reading the
files is `corpus_readers`; making a corpus (SQuAD, a folder, uploads) is `importers`.
"""

from __future__ import annotations

import hashlib
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from pipelines.config import Settings
from pipelines.corpus_readers import DOC_SUFFIXES, QA, Doc, load_qa, read_document, scan_docs
from pipelines.errors import CorpusError
from pipelines.leakage import normalise

__all__ = ["QA", "Corpus", "Doc", "load", "list_corpora", "corpora_dir", "resolve", "missing_sources", "find_question"]

REQUIRED_META = ("name", "description", "source", "license")


BUNDLED_DIR = Path(__file__).resolve().parents[1] / "corpora"


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


def missing_sources(corpus: Corpus, rows: list[QA] | None = None) -> list[QA]:
    """QA rows whose source documents the corpus does not have (retrieval can never find them)."""
    return [q for q in (corpus.eval if rows is None else rows) if any(s not in corpus.doc_paths for s in q.source_ids)]


def find_question(corpus: Corpus, question: str) -> QA | None:
    """The eval or train question asked with these words (case, spaces and punctuation aside), if any."""
    wanted = normalise(question)
    return next((q for q in [*corpus.eval, *corpus.train] if normalise(q.question) == wanted), None) if wanted else None
