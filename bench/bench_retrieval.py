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

from pipelines import corpus as corpora  # noqa: E402
from pipelines import rag  # noqa: E402
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
    corpora.import_squad(SQUAD, settings, "squad")
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
    for copies in (8, 75):
        big = replicated_corpus(settings, copies)
        t = time.perf_counter()
        report = rag.build_index(big, settings)
        rate = report.chunks_embedded / (time.perf_counter() - t)
        for mode in ("dense", "hybrid"):
            p50, p95 = latency(big, settings, questions, mode)
            result["scale"][f"{report.chunks_total}-{mode}"] = {"chunks_per_s": rate, "p50_ms": p50, "p95_ms": p95}
            print(f"{report.chunks_total:>7} {rate:>15.1f} {mode:<7} {p50:>7.1f} {p95:>7.1f}")
    (OUT / "retrieval.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
