"""Training questions from documents alone: a teacher model writes question/answer pairs per chunk.

This is the documents-only track. A team has documents, not paraphrases of the questions it will be
asked, so the teacher sees only chunks of the corpus — never its eval questions (the leakage guard
still checks what it wrote). Pairs are kept only when the answer is a span of the chunk it came
from ("grounded"): an answer the teacher made up would teach the model to make things up, and
`synthetic-raft` needs the chunk holding the answer to put it in the prompt.

Writing pairs is the slow part of such a fine-tune (a 1.5B teacher on CPU takes seconds per
chunk), so every chunk's pairs are appended to a cache as they are written, keyed by teacher,
prompt and chunk text: an interrupted or repeated fine-tune asks the teacher only for chunks it
has not answered yet.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import ollama

from pipelines import files, generation, models, serving
from pipelines.config import Settings
from pipelines.corpus import QA, Corpus
from pipelines.errors import UnknownNameError
from pipelines.train import TrainingError

PER_CHUNK = 3
MAX_ANSWER_WORDS = 12  # the eval answers are short spans; a sentence-long "answer" is a summary
PROMPT = (
    "Write {n} question and answer pairs about facts stated in the text below.\n"
    "- Each question names its subject, so it can be understood without the text (never \"the text\", "
    "\"the passage\", \"it\").\n"
    "- Each answer is a short span copied exactly from the text: a name, number, date or phrase of a few words.\n"
    "- Ask about different facts.\n\nText:\n{text}"
)
_SCHEMA = {"type": "object", "properties": {"pairs": {"type": "array", "items": {
    "type": "object", "properties": {"question": {"type": "string"}, "answer": {"type": "string"}},
    "required": ["question", "answer"]}}}, "required": ["pairs"]}
_PROMPT_VERSION = hashlib.sha256((PROMPT + json.dumps(_SCHEMA)).encode()).hexdigest()[:8]


@dataclass(frozen=True)
class Pair:
    question: str
    answer: str
    doc_id: str
    chunk: str  # the chunk text it was written from


@dataclass
class Written:
    pairs: list[Pair]
    teacher: str
    chunks: int
    from_cache: int  # chunks whose pairs the cache already held
    failed: int  # chunks whose reply did not parse (asked again next time)
    dropped_ungrounded: int  # answers not found in their chunk, or too long
    seconds: float  # teacher time in this call (cached chunks cost nothing)

    def summary(self) -> str:
        return (f"synthetic pairs: {len(self.pairs)} from {self.chunks} chunks by the teacher {self.teacher} "
                f"({self.from_cache} chunks from cache, {self.failed} failed to parse, {self.dropped_ungrounded} "
                f"answers dropped as not a short span of their chunk; {self.seconds:.0f} s of teacher time)")

    def as_qa(self) -> list[QA]:
        """The pairs as training questions (one id per pair, the chunk's document as its source)."""
        return [QA(id=f"syn-{i}", question=p.question, answers=[p.answer], source_ids=[p.doc_id])
                for i, p in enumerate(self.pairs)]


def teacher_model(settings: Settings, server: serving.Server, log: Callable[[str], None] = print) -> str:
    """The Ollama name of the teacher: a ragft model (prepared and served if needed) or a model the
    server already has. Unset → the base model itself (weak for a 135M base: the run says so)."""
    name = settings.teacher_model or settings.model
    try:
        spec = models.get_spec(name, settings)
    except UnknownNameError:
        if generation.has_model(server, settings, name):
            return name
        raise TrainingError(f"teacher model '{name}' is neither a ragft model nor on the Ollama server",
                            f"known models: {', '.join(models.known_models(settings))}; or pull it into the "
                            "server first") from None
    if not settings.teacher_model:
        log("note: no teacher model set, so the base model writes the pairs; a small base writes weak ones. "
            "Set teacher_model (e.g. qwen2.5-coder-1.5b) for better ones.")
    return models.ensure_served(spec, settings, server, log)


def grounded(answer: str, chunk: str) -> bool:
    words = answer.split()
    return bool(words) and len(words) <= MAX_ANSWER_WORDS and answer.strip().lower() in chunk.lower()


def _cache_path(corpus: Corpus, settings: Settings, teacher: str) -> Path:
    return (settings.data_dir.expanduser() / "synthetic" / models.safe_name(corpus.name)
            / f"{files.safe_stem(teacher)}.jsonl")


def _key(text: str, per_chunk: int) -> str:
    return hashlib.sha256(f"{_PROMPT_VERSION}:{per_chunk}:{text}".encode()).hexdigest()[:20]


def _read_cache(path: Path) -> dict[str, list[dict[str, str]]]:
    cached: dict[str, list[dict[str, str]]] = {}
    with contextlib.suppress(OSError):
        for line in path.read_text(encoding="utf-8").splitlines():
            with contextlib.suppress(ValueError, KeyError, TypeError):  # a line cut by a kill is asked again
                row = json.loads(line)
                cached[str(row["key"])] = list(row["pairs"])
    return cached


def _ask(client: Any, teacher: str, text: str, per_chunk: int, settings: Settings) -> list[dict[str, str]]:
    res = client.generate(model=teacher, prompt=PROMPT.format(n=per_chunk, text=text), format=_SCHEMA,
                          options={**settings.decoding_options(), "num_predict": 96 * per_chunk})
    pairs = json.loads(res.response or "")["pairs"]
    return [{"question": str(p["question"]).strip(), "answer": str(p["answer"]).strip()}
            for p in pairs[:per_chunk] if isinstance(p, dict) and p.get("question") and p.get("answer")]


def write_pairs(corpus: Corpus, chunks: list[tuple[str, str]], settings: Settings, server: serving.Server,
                log: Callable[[str], None] = print, per_chunk: int = PER_CHUNK,
                progress: Callable[[int, int], None] | None = None) -> Written:
    """Pairs for every (document id, chunk text), from the cache where it has them."""
    teacher = teacher_model(settings, server, log)
    path = _cache_path(corpus, settings, teacher)
    cached = _read_cache(path)
    client = generation.client(server, settings)
    out: list[Pair] = []
    seen: set[str] = set()
    from_cache = failed = dropped = 0
    started = time.perf_counter()
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as sink:
        for i, (doc_id, text) in enumerate(chunks):
            key = _key(text, per_chunk)
            if key in cached:
                raw, from_cache = cached[key], from_cache + 1
            else:
                try:
                    raw = _ask(client, teacher, text, per_chunk, settings)
                except (ValueError, KeyError, TypeError, ollama.ResponseError):  # a reply that is not the schema
                    failed += 1
                    continue
                except (httpx.HTTPError, ConnectionError) as exc:  # the server is gone: every chunk would fail
                    raise TrainingError(f"the teacher {teacher} stopped answering after {i} of {len(chunks)} chunks "
                                        f"({type(exc).__name__})", "check `ragft serve status`, then run the "
                                        "fine-tune again: the pairs written so far are cached and reused") from exc
                sink.write(json.dumps({"key": key, "doc": doc_id, "pairs": raw}, ensure_ascii=False) + "\n")
                sink.flush()
            for p in raw:
                if not grounded(p["answer"], text):
                    dropped += 1
                elif p["question"].lower() not in seen:
                    seen.add(p["question"].lower())
                    out.append(Pair(p["question"], p["answer"], doc_id, text))
            if progress:
                progress(i + 1, len(chunks))
    return Written(out, teacher, len(chunks), from_cache, failed, dropped, round(time.perf_counter() - started, 1))


def copy_cache(source: Corpus, target: Corpus, settings: Settings) -> int:
    """Give `target` the teacher pairs already written for `source` (keyed by chunk text, so only the
    chunks that differ are asked again); returns the cache files copied, none over an existing one."""
    import shutil

    src = settings.data_dir.expanduser() / "synthetic" / models.safe_name(source.name)
    dst = settings.data_dir.expanduser() / "synthetic" / models.safe_name(target.name)
    copied = 0
    for f in sorted(src.glob("*.jsonl")) if src.is_dir() else []:
        if not (dst / f.name).exists():
            dst.mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, dst / f.name)
            copied += 1
    return copied
