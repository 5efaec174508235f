"""Retrieval benchmark: recall@k on the SQuAD subset per retrieval mode, indexing throughput,
and end-to-end retrieval latency (query embedding + search) at ~1k and ~10k chunks.

Run with `make bench`. Uses its own data dir under bench/results so it never touches yours.
"""

from __future__ import annotations

import json
import shutil
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import contextlib

from pipelines import corpus as corpora  # noqa: E402
from pipelines import importers, rag  # noqa: E402
from pipelines.config import load_settings  # noqa: E402

SQUAD = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "squad-v1.1-dev" / "squad-dev-4-articles.json"
OUT = Path(__file__).parent / "results"
KS = (1, 3, 5)


def recall_at_k(corpus: corpora.Corpus, settings, mode: str) -> dict[int, float]:
    questions = corpus.eval + corpus.train  # all 593, as the dense baseline was measured
    found = {k: 0 for k in KS}
    for qa in questions:
        hits, _ = rag.retrieve(corpus, qa.question, settings, k=max(KS), mode=mode)
        docs = [h.doc_id for h in hits]
        for k in KS:
            found[k] += any(s in docs[:k] for s in qa.source_ids)
    return {k: found[k] / len(questions) for k in KS}


def replicated_corpus(settings, copies: int) -> corpora.Corpus:
    """The SQuAD paragraphs written `copies` times (distinct ids) to reach a target chunk count."""
    src = corpora.load("squad", settings)
    root = OUT / f"squad-x{copies}"
    if root.exists():
        shutil.rmtree(root)
    (root / "docs").mkdir(parents=True)
    for c in range(copies):
        for doc_id, path in src.doc_paths.items():
            text = path.read_text(encoding="utf-8")
            (root / "docs" / f"{doc_id}-r{c:03d}.txt").write_text(text if c == 0 else f"[copy {c}] {text}")
    (root / "corpus.toml").write_text(f'name = "squad-x{copies}"\ndescription = "bench"\nsource = "SQuAD"\nlicense = "CC BY-SA 4.0"\n')
    return corpora.load(str(root), settings)


def scaled_collection(src: corpora.Corpus, settings, factor: int) -> corpora.Corpus:
    """A collection `factor` times larger, made of the source's stored vectors plus small noise.

    Embedding 10k chunks on 2 cores takes minutes and measures nothing new (throughput is
    measured at 1k); search latency only needs the vectors and texts to be there.
    """
    import numpy as np

    cfg = rag.RetrievalConfig.for_corpus(src, settings)
    got = rag._collection(settings, rag.collection_name(src.name, cfg), create=False).get(
        include=["embeddings", "documents", "metadatas"])
    scaled = corpora.Corpus(f"{src.name}-x{factor}", src.root, "bench", "bench", "bench", src.doc_paths, [], [])
    client = rag.chroma_client(settings)
    name = rag.collection_name(scaled.name, cfg)
    with contextlib.suppress(Exception):
        client.delete_collection(name)
    col = client.create_collection(name, metadata={"hnsw:space": "cosine"})
    rng = np.random.default_rng(0)
    base = np.asarray(got["embeddings"], dtype=np.float32)
    for f in range(factor):
        vecs = base + rng.normal(0, 0.01, base.shape).astype(np.float32) if f else base
        ids = [f"{i}~{f}" for i in got["ids"]]
        for s in range(0, len(ids), 2000):
            col.add(ids=ids[s:s + 2000], embeddings=vecs[s:s + 2000].tolist(), documents=got["documents"][s:s + 2000],
                    metadatas=got["metadatas"][s:s + 2000])
    return scaled


def latency(corpus: corpora.Corpus, settings, questions: list[str], mode: str) -> tuple[float, float]:
    rag.retrieve(corpus, questions[0], settings, mode=mode)  # warm caches (BM25 build, model load)
    times = []
    for q in questions:
        _, ms = rag.retrieve(corpus, q, settings, k=5, mode=mode)
        times.append(ms)
    times.sort()
    return statistics.median(times), times[int(0.95 * (len(times) - 1))]


def main() -> None:
    OUT.mkdir(exist_ok=True)
    data = OUT / "retrieval-data"
    shutil.rmtree(data, ignore_errors=True)
    settings = load_settings(data_dir=data, chunk_size=512, chunk_overlap=32)
    importers.import_squad(SQUAD, settings, "squad")
    squad = corpora.load("squad", settings)
    rag.build_index(squad, settings)
    result: dict = {"recall": {}, "scale": {}}
    print(f"recall@k on the SQuAD subset ({len(squad.eval) + len(squad.train)} questions, {len(squad.doc_paths)} paragraphs)")
    print(f"{'mode':<8} " + " ".join(f"{'R@' + str(k):>6}" for k in KS))
    for mode in ("dense", "bm25", "hybrid"):
        r = recall_at_k(squad, settings, mode)
        result["recall"][mode] = r
        print(f"{mode:<8} " + " ".join(f"{r[k]:>6.3f}" for k in KS))
    questions = [qa.question for qa in squad.eval][:200]
    print("\nindexing throughput and retrieval latency (query embedding + search, k=5)")
    print(f"{'chunks':>7} {'index chunks/s':>15} {'mode':<7} {'p50 ms':>7} {'p95 ms':>7}")
    big = replicated_corpus(settings, 8)
    t = time.perf_counter()
    report = rag.build_index(big, settings)
    rate = report.chunks_embedded / (time.perf_counter() - t)
    huge = scaled_collection(big, settings, factor=10)
    for corpus, label_rate in ((big, f"{rate:.1f}"), (huge, "(copied)")):
        n = rag._collection(settings, rag.collection_name(corpus.name, rag.RetrievalConfig.for_corpus(corpus, settings)),
                            create=False).count()
        for mode in ("dense", "hybrid"):
            p50, p95 = latency(corpus, settings, questions, mode)
            result["scale"][f"{n}-{mode}"] = {"chunks_per_s": rate, "p50_ms": p50, "p95_ms": p95}
            print(f"{n:>7} {label_rate:>15} {mode:<7} {p50:>7.1f} {p95:>7.1f}")
    (OUT / "retrieval.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
