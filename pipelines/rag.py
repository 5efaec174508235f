"""The RAG arm's store and retriever: LlamaIndex chunking + MiniLM embeddings in ChromaDB,
dense, BM25 or hybrid (reciprocal-rank fusion) retrieval, and the answer prompt.

Chroma is touched only here. One collection per (corpus, embedding model, chunking); each
chunk carries doc id, path, position and the doc's content hash, which makes re-indexing
incremental: only new or changed docs are embedded, deleted docs are removed.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from pipelines import embeddings, files
from pipelines.config import Settings
from pipelines.corpus import Corpus
from pipelines.errors import CorpusError, RagftError, option
from pipelines.models import safe_name

Progress = Callable[[int, int, str], None]

@dataclass
class RetrievalConfig:
    mode: str
    top_k: int
    chunk_size: int
    chunk_overlap: int

    @classmethod
    def for_corpus(cls, corpus: Corpus | None, settings: Settings) -> RetrievalConfig:
        over = corpus.retrieval if corpus else {}
        cfg = cls(str(over.get("mode", settings.retrieval_mode)), int(over.get("top_k", settings.top_k)),  # type: ignore[call-overload]
                  int(over.get("chunk_size", settings.chunk_size)), int(over.get("chunk_overlap", settings.chunk_overlap)))  # type: ignore[call-overload]
        if cfg.mode not in ("dense", "bm25", "hybrid"):
            raise CorpusError(f"retrieval mode '{cfg.mode}' in corpus.toml is unknown", "use dense, bm25 or hybrid")
        if not 0 <= cfg.chunk_overlap < cfg.chunk_size:
            raise CorpusError(f"chunk_overlap {cfg.chunk_overlap} must be below chunk_size {cfg.chunk_size}")
        return cfg


@dataclass
class Hit:
    id: str  # chunk id: "<doc id>#<position>"
    doc_id: str
    text: str
    score: float


@dataclass
class IndexReport:
    collection: str
    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    unchanged: int = 0
    chunks_embedded: int = 0
    chunks_total: int = 0
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0
    content_hash: str = ""  # of every indexed document's content (see index_identity)


# ---------------------------------------------------------------- Chroma


def collection_name(corpus_name: str, cfg: RetrievalConfig) -> str:
    # Chroma wants 3-512 chars of [a-zA-Z0-9._-], starting and ending alphanumeric.
    return safe_name(f"{corpus_name}.{embeddings.EMBED_MODEL_ID}.c{cfg.chunk_size}o{cfg.chunk_overlap}")


def chroma_client(settings: Settings) -> Any:
    import chromadb
    from chromadb.config import Settings as ChromaSettings

    chroma_settings = ChromaSettings(anonymized_telemetry=False)
    if settings.chroma_url:
        from urllib.parse import urlparse

        u = urlparse(settings.chroma_url if "://" in settings.chroma_url else f"http://{settings.chroma_url}")
        return chromadb.HttpClient(host=u.hostname or "127.0.0.1", port=u.port or 8000, ssl=u.scheme == "https",
                                   settings=chroma_settings)
    settings.chroma_dir.mkdir(parents=True, exist_ok=True)
    _forget_if_changed_elsewhere(settings)
    try:
        return chromadb.PersistentClient(path=str(settings.chroma_dir), settings=chroma_settings)
    except Exception as exc:  # chroma raises its own and sqlite errors on a damaged store
        raise RagftError(f"the index store at {settings.chroma_dir} cannot be opened (damaged?): {exc}",
                         "rebuild it with `ragft index CORPUS --rebuild` (the damaged store is moved aside, "
                         "not deleted)") from exc


# Chroma keeps each collection's vector index in memory, once per process and path, and does not see
# what another process writes: a long-lived process (the app) would keep answering from the index
# as it was before an `ragft index` job updated it (tested). Every build stamps the store; a process
# that finds a stamp it did not see drops its cached Chroma system, and the next client reads the disk.
_seen_stamps: dict[str, str] = {}
_stamp_lock = threading.Lock()


def _stamp_path(settings: Settings) -> Path:
    return settings.chroma_dir / "ragft-stamp"


def _stamp(settings: Settings) -> None:
    path = _stamp_path(settings)
    files.write_atomic(path, f"{os.getpid()} {time.time_ns()}")
    with _stamp_lock:
        _seen_stamps[str(settings.chroma_dir)] = path.read_text(encoding="ascii")  # this process's copy is current


def _forget_if_changed_elsewhere(settings: Settings) -> None:
    try:
        stamp = _stamp_path(settings).read_text(encoding="ascii")
    except OSError:
        stamp = ""
    key = str(settings.chroma_dir)
    with _stamp_lock:
        if key in _seen_stamps and _seen_stamps[key] != stamp:
            from chromadb.api.client import SharedSystemClient

            SharedSystemClient.clear_system_cache()
            _bm25.cache_clear()
        _seen_stamps[key] = stamp


def move_store_aside(settings: Settings) -> Path | None:
    """The way out of a damaged index store: rename it (nothing is deleted); indexes are rebuildable."""
    if settings.chroma_url or not settings.chroma_dir.exists():
        return None
    dest = settings.chroma_dir.with_name(f"{settings.chroma_dir.name}.broken-{time.strftime('%Y%m%d-%H%M%S')}")
    settings.chroma_dir.rename(dest)
    # Chroma keeps one open system per path for the life of the process; drop it, or the next
    # client at this path would still talk to the moved-aside store.
    from chromadb.api.client import SharedSystemClient

    SharedSystemClient.clear_system_cache()
    return dest


def _collection(settings: Settings, name: str, create: bool) -> Any:
    client = chroma_client(settings)
    if create:
        return client.get_or_create_collection(name, metadata={"hnsw:space": "cosine"})
    try:
        return client.get_collection(name)
    except Exception as exc:
        raise CorpusError(f"no index '{name}' yet", "run `ragft index CORPUS` first") from exc


# ---------------------------------------------------------------- index


def build_index(corpus: Corpus, settings: Settings, progress: Progress | None = None) -> IndexReport:
    """Create or update the corpus's collection; embeds only new or changed documents."""
    from llama_index.core import Document
    from llama_index.core.node_parser import SentenceSplitter

    started = time.perf_counter()
    cfg = RetrievalConfig.for_corpus(corpus, settings)
    report = IndexReport(collection_name(corpus.name, cfg))
    docs, report.problems = corpus.read_docs(int(settings.max_file_mb * 1e6))
    report.problems = corpus.problems + report.problems
    col = _collection(settings, report.collection, create=True)

    stored: dict[str, str] = {}
    existing = col.get(include=["metadatas"])
    for meta in existing["metadatas"] or []:
        stored[str(meta["doc_id"])] = str(meta["content_hash"])
    current = {d.id: d for d in docs}
    # A doc that could not be read this time keeps its old chunks: bad input never loses indexed work.
    unreadable = set(corpus.doc_paths) - set(current)
    report.removed = sorted(set(stored) - set(corpus.doc_paths))
    todo = []
    for d in docs:
        if d.id not in stored:
            report.added.append(d.id)
            todo.append(d)
        elif stored[d.id] != d.content_hash:
            report.changed.append(d.id)
            todo.append(d)
        else:
            report.unchanged += 1
    for doc_id in report.removed + report.changed:
        col.delete(where={"doc_id": doc_id})

    splitter = SentenceSplitter(chunk_size=cfg.chunk_size, chunk_overlap=cfg.chunk_overlap)
    embed = embeddings.llama_index_embedding()
    batch_docs = 16
    _write_progress(settings, report.collection, 0, len(todo), "embedding")
    for start in range(0, len(todo), batch_docs):
        batch = todo[start:start + batch_docs]
        ids, texts, metas = [], [], []
        for d in batch:
            nodes = splitter.get_nodes_from_documents([Document(text=d.text, id_=d.id)])
            for pos, node in enumerate(nodes):
                ids.append(f"{d.id}#{pos}")
                texts.append(node.get_content())
                metas.append({"doc_id": d.id, "path": str(d.path.relative_to(corpus.root)), "position": pos,
                              "content_hash": d.content_hash})
        if texts:
            vectors = embed.get_text_embedding_batch(texts)
            col.upsert(ids=ids, documents=texts, metadatas=metas, embeddings=vectors)
            report.chunks_embedded += len(texts)
        _write_progress(settings, report.collection, min(start + batch_docs, len(todo)), len(todo), "embedding")
        if progress:
            progress(min(start + batch_docs, len(todo)), len(todo), "embedding")
    report.chunks_total = col.count()
    indexed = {k: v for k, v in stored.items() if k not in report.removed} | {d.id: d.content_hash for d in todo}
    report.content_hash = _content_hash(indexed)
    if unreadable & set(stored):
        report.problems.append(f"kept the previously indexed version of: {', '.join(sorted(unreadable & set(stored)))}")
    _bm25.cache_clear()
    report.seconds = time.perf_counter() - started
    _record_build(settings, report)
    _stamp(settings)
    _write_progress(settings, report.collection, len(todo), len(todo), "done")
    return report


def copy_index(source: Corpus, target: Corpus, settings: Settings) -> int:
    """Seed `target`'s collection with `source`'s chunks and vectors, so that indexing the target
    afterwards embeds only the documents that differ (what an incremental update costs). Returns the
    chunks copied; a target that already has chunks is left as it is."""
    src = _collection(settings, collection_name(source.name, RetrievalConfig.for_corpus(source, settings)), create=False)
    name = collection_name(target.name, RetrievalConfig.for_corpus(target, settings))
    dst = _collection(settings, name, create=True)
    if dst.count():
        return 0
    data = src.get(include=["documents", "metadatas", "embeddings"])
    ids = data["ids"]
    for start in range(0, len(ids), 500):
        end = start + 500
        dst.add(ids=ids[start:end], documents=data["documents"][start:end], metadatas=data["metadatas"][start:end],
                embeddings=data["embeddings"][start:end])
    record = index_record(source, settings) or {}
    files.write_json(_build_path(settings, name), {"build_seconds": 0.0, "chunks": dst.count(),
                                                   "content_hash": record.get("content_hash")})
    _bm25.cache_clear()
    return len(ids)


def _build_path(settings: Settings, collection: str) -> Path:
    return settings.chroma_dir / f"{collection}.build.json"


def _record_build(settings: Settings, report: IndexReport) -> None:
    """Keep the compute an index has cost so far (cost model: the rag arm's one-off cost)."""
    path = _build_path(settings, report.collection)
    total = float((files.read_json(path) or {}).get("build_seconds", 0.0))
    files.write_json(path, {"build_seconds": total + report.seconds, "chunks": report.chunks_total,
                            "content_hash": report.content_hash})


def _content_hash(doc_hashes: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps(sorted(doc_hashes.items())).encode()).hexdigest()[:16]


def index_identity(corpus: Corpus, settings: Settings) -> dict[str, Any]:
    """What the rag arms answer from: the effective retrieval config (settings and the corpus's
    [retrieval] overrides), the collection, and a hash of the documents in it as last built.
    An evaluation's run id includes it, so editing a document and re-indexing starts a new run
    instead of resuming with answers from the old text."""
    cfg = RetrievalConfig.for_corpus(corpus, settings)
    record = index_record(corpus, settings) or {}
    return {**asdict(cfg), "collection": collection_name(corpus.name, cfg), "content_hash": record.get("content_hash")}


def _progress_path(settings: Settings, collection: str) -> Path:
    return settings.chroma_dir / f"{collection}.progress.json"


def _write_progress(settings: Settings, collection: str, done: int, total: int, what: str) -> None:
    """Where a build is (docs embedded of docs to embed), for whoever watches it from another process."""
    files.write_json(_progress_path(settings, collection), {"done": done, "total": total, "what": what, "at": time.time()})


def index_progress(corpus: Corpus, settings: Settings) -> dict[str, Any] | None:
    """The last progress a build of this corpus's index wrote: done, total, what ("embedding" or "done"), at."""
    return files.read_json(_progress_path(settings, collection_name(corpus.name, RetrievalConfig.for_corpus(corpus, settings))))


def require_index(corpus: Corpus, settings: Settings) -> None:
    """Fail now, naming the fix, when the corpus has no (or an empty) index — not after the base arm's answers."""
    name = collection_name(corpus.name, RetrievalConfig.for_corpus(corpus, settings))
    try:
        count = _collection(settings, name, create=False).count()
    except CorpusError:
        count = 0
    if count == 0:
        raise CorpusError(f"corpus '{corpus.name}' has no index ('{name}') for the rag arms",
                          f"run `ragft index {corpus.name}` first, or leave rag and ft_rag out of {option('arms')}")


def index_record(corpus: Corpus, settings: Settings) -> dict[str, Any] | None:
    """What the last finished build recorded (chunks, build seconds so far), or None if never built."""
    return files.read_json(_build_path(settings, collection_name(corpus.name, RetrievalConfig.for_corpus(corpus, settings))))


def index_build_seconds(corpus: Corpus, settings: Settings) -> float:
    return float((index_record(corpus, settings) or {}).get("build_seconds", 0.0))


# ---------------------------------------------------------------- retrieval


@lru_cache(maxsize=8)
def _bm25(data_dir: str, chroma_url: str | None, collection: str, count: int, top_n: int) -> Any:
    """A BM25 retriever over all chunks of a collection, cached per process until the collection changes."""
    from llama_index.retrievers.bm25 import BM25Retriever

    settings = Settings(data_dir=Path(data_dir), chroma_url=chroma_url)
    col = _collection(settings, collection, create=False)
    got = col.get(include=["documents", "metadatas"])
    nodes = [_node(i, t, m) for i, t, m in zip(got["ids"], got["documents"], got["metadatas"], strict=True)]
    return BM25Retriever.from_defaults(nodes=nodes, similarity_top_k=min(top_n, len(nodes)))


def _node(node_id: str, text: str, metadata: Any) -> Any:
    from llama_index.core.schema import TextNode

    # Fusion matches nodes by content hash, which covers the metadata: give both retrievers one key order.
    return TextNode(id_=node_id, text=text, metadata=dict(sorted(dict(metadata).items())))


def _to_hits(results: list[Any]) -> list[Hit]:
    return [Hit(r.node.node_id, str(r.node.metadata.get("doc_id", "")), r.node.get_content(), float(r.score or 0.0))
            for r in results]


def retrieve(corpus: Corpus, question: str, settings: Settings, k: int | None = None,
             mode: str | None = None) -> tuple[list[Hit], float]:
    """Top-k chunks for a question and the milliseconds it took (query embedding included)."""
    from llama_index.core.schema import QueryBundle

    cfg = RetrievalConfig.for_corpus(corpus, settings)
    k = k or cfg.top_k
    mode = mode or cfg.mode
    name = collection_name(corpus.name, cfg)
    col = _collection(settings, name, create=False)
    count = col.count()
    if count == 0:
        raise CorpusError(f"the index of '{corpus.name}' is empty", f"run `ragft index {corpus.name}`")
    pool = max(k, 20)  # candidates per retriever before fusion
    # One-off costs (loading MiniLM, building BM25) stay out of the per-question timing.
    embed = embeddings.llama_index_embedding() if mode in ("dense", "hybrid") else None
    bm25 = _bm25(str(settings.data_dir), settings.chroma_url, name, count, pool) \
        if mode in ("bm25", "hybrid") else None
    started = time.perf_counter()
    query = QueryBundle(question)
    if mode == "dense":
        return _to_hits(_dense_retriever(col, embed, min(k, count)).retrieve(query)), (time.perf_counter() - started) * 1000
    assert bm25 is not None
    if mode == "bm25":
        return _to_hits(bm25.retrieve(query)[:k]), (time.perf_counter() - started) * 1000
    from llama_index.core.llms import MockLLM
    from llama_index.core.retrievers import QueryFusionRetriever
    from llama_index.core.retrievers.fusion_retriever import FUSION_MODES

    # Reciprocal-rank fusion (k = 60) of both candidate pools. One query (num_queries=1): the
    # LLM that would write query variations is never called, so a stand-in is passed.
    fusion = QueryFusionRetriever([_dense_retriever(col, embed, min(pool, count)), bm25], llm=MockLLM(),
                                  mode=FUSION_MODES.RECIPROCAL_RANK, similarity_top_k=k, num_queries=1,
                                  use_async=False)
    return _to_hits(fusion.retrieve(query)), (time.perf_counter() - started) * 1000


def _dense_retriever(col: Any, embed: Any, n: int) -> Any:
    """The Chroma collection's nearest chunks as a LlamaIndex retriever (cosine similarity scores)."""
    from llama_index.core.retrievers import BaseRetriever
    from llama_index.core.schema import NodeWithScore, QueryBundle

    class Dense(BaseRetriever):
        def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
            vec = embed.get_query_embedding(query_bundle.query_str)
            res = col.query(query_embeddings=[vec], n_results=n, include=["documents", "metadatas", "distances"])
            return [NodeWithScore(node=_node(i, t, m), score=1.0 - d)
                    for i, t, m, d in zip(res["ids"][0], res["documents"][0], res["metadatas"][0], res["distances"][0],
                                          strict=True)]

    return Dense()
