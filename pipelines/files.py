"""Small files other processes read while ragft writes them: written whole or not at all."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

from pipelines.errors import UnknownNameError


def write_atomic(path: Path, text: str) -> None:
    """Write `text` to a temp file beside `path`, then rename: a reader (or a crash) never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")  # unique: writers never collide
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_json(path: Path, data: Any, indent: int | None = None) -> None:
    write_atomic(path, json.dumps(data, indent=indent, default=str))


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object from disk, or None when the file is missing or not (yet) valid JSON."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


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
