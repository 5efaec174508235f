"""Small files other processes read while ragft writes them: written whole or not at all."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import tempfile
import unicodedata
from pathlib import Path
from typing import Any

from pipelines.errors import UnknownNameError


def write_atomic(path: Path, text: str) -> None:
    """Write `text` to a temp file beside `path`, then rename: a reader (or a crash) never sees half a file.

    The data is fsynced before the rename and the folder after it; without that, a power cut
    can leave the new name pointing at an empty file.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")  # unique: writers never collide
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def fsync_dir(folder: Path) -> None:
    """Make a rename inside `folder` durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_json(path: Path, data: Any, indent: int | None = None) -> None:
    write_atomic(path, json.dumps(data, indent=indent, default=str))


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object from disk, or None when the file is missing or not (yet) valid JSON."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def ensure_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


_SAFE_NAME = re.compile(r"[^a-z0-9._-]+")


def safe_name(text: str, max_len: int = 80) -> str:
    """A name Ollama, Chroma and file paths all accept: lowercase [a-z0-9._-], no leading dot.

    A name longer than `max_len` keeps its start and ends in a hash of the whole: two long
    names that share their first 80 characters (URL titles, `…-p001`/`…-p002`) stay apart.
    """
    cleaned = _SAFE_NAME.sub("-", text.lower())
    cleaned = re.sub(r"-{2,}", "-", re.sub(r"\.{2,}", "-", cleaned)).strip("-.")  # no '..' survives
    if not cleaned:
        raise UnknownNameError(f"'{text}' has no usable characters for a name", "use letters, digits, '-', '_' or '.'")
    if len(cleaned) > max_len:
        digest = hashlib.sha256(cleaned.encode()).hexdigest()[:8]
        cleaned = f"{cleaned[:max_len - 9].rstrip('-.')}-{digest}"
    return cleaned


def safe_stem(text: str, max_len: int = 80) -> str:
    """A document id from a file name or title that always exists and never merges two names.

    Accents fold to ASCII (`Café` → `cafe`). Letters with no ASCII form (`отчёт`) and names with
    nothing usable (`!!!`) are kept apart by a hash of the original: `отчёт 2024` → `2024-1a2b3c4d`,
    `!!!` → `doc-5e6f7a8b` — stable, so the same file keeps its id.
    """
    folded = unicodedata.normalize("NFKD", text)
    lost = any(ord(ch) > 127 and not unicodedata.combining(ch) for ch in folded)
    ascii_text = folded.encode("ascii", "ignore").decode()
    digest = hashlib.sha256(text.encode()).hexdigest()[:8]
    try:
        name = safe_name(ascii_text, max_len)
    except UnknownNameError:
        return f"doc-{digest}"
    if not lost:
        return name
    return f"{name[:max_len - 9].rstrip('-.')}-{digest}"


def unique_name(name: str, taken: set[str] | dict[str, object]) -> str:
    """`name`, or `name-2`, `name-3`, … when it is taken (two titles or uploads that clean alike)."""
    n, candidate = 1, name
    while candidate in taken:
        n += 1
        candidate = f"{name}-{n}"
    return candidate
