"""Base models side by side: the same SQuAD questions through base and rag with each model, in one run.

`python bench/bench_models.py [N] [SEED] [MODEL ...]` (default: 100 questions, seed 1,
smollm2-135m and qwen2.5-coder-0.5b). Same server, same index, same decoding; prints reference
contained with its 95% bootstrap CI, retrieval hit, answers/min and decode tok/s per model and
arm, and the ratio of each model's rag score to the first model's. Part of `make bench`.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.squad import indexed_squad  # noqa: E402
from eval.report import summarise  # noqa: E402
from eval.runner import EvalConfig, run_eval  # noqa: E402
from eval.store import Store  # noqa: E402
from pipelines.config import load_settings  # noqa: E402


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100
    seed = int(sys.argv[2]) if len(sys.argv) > 2 else 1
    names = sys.argv[3:] or ["smollm2-135m", "qwen2.5-coder-0.5b"]
    base_settings = load_settings()
    corpus = indexed_squad(base_settings)
    store = Store(base_settings.runs_db)
    rows = []
    for name in names:
        settings = base_settings.model_copy(update={"model": name})
        started = time.perf_counter()
        run_id = run_eval(corpus, EvalConfig(["base", "rag"], limit=n, seed=seed), settings, store, log=lambda _: None)
        wall = time.perf_counter() - started
        s = summarise(store, run_id)
        rows.append((name, run_id, wall, s))
    print(f"\nSQuAD subset, {n} eval questions (seed {seed}), arms base and rag, one server, temperature 0")
    print(f"{'model':<20} {'arm':<5} {'contains [95% CI]':<24} {'hit':>5} {'answers/min':>12} {'tok/s':>7}")
    first_rag = None
    for name, _, wall, s in rows:
        for arm in ("base", "rag"):
            c = s["metrics"]["contains"][arm]
            hit = s["metrics"].get("retrieval_hit", {}).get(arm, {}).get("mean")
            lat = s["latency"][arm]
            print(f"{name:<20} {arm:<5} {c['mean']:.2f} [{c['lo']:.2f}, {c['hi']:.2f}]{'':<8} "
                  f"{'-' if hit is None else f'{hit:.2f}':>5} {lat['answers_per_min']:>12.1f} {lat['tokens_per_s']:>7.1f}")
        rag_mean = s["metrics"]["contains"]["rag"]["mean"]
        first_rag = rag_mean if first_rag is None else first_rag
        ratio = rag_mean / first_rag if first_rag else float("nan")
        print(f"{name:<20} wall {wall / 60:.1f} min (answering + non-LLM scores); rag vs {names[0]}: {ratio:.2f}×")


if __name__ == "__main__":
    main()
