"""Parallel requests to Ollama: answers/min and identical answers, one request at a time vs several.

`python bench/bench_parallel.py [MODEL] [N]` (default: qwen2.5-coder-0.5b, 16 rag prompts of the
SQuAD subset). For each setting a fresh server of its own (OLLAMA_NUM_PARALLEL = 1, then 2)
answers the same prompts — sequentially, then from as many threads as it has slots — at
temperature 0. Prints answers/min as a ratio to the sequential run, and how many answers equal
the sequential ones. Part of `make bench`.
"""

from __future__ import annotations

import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.squad import indexed_squad  # noqa: E402
from eval.runner import select_questions  # noqa: E402
from pipelines import generation, models, prompts, rag, serving  # noqa: E402
from pipelines.config import Settings, load_settings  # noqa: E402


def main() -> None:
    model = sys.argv[1] if len(sys.argv) > 1 else "qwen2.5-coder-0.5b"
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 16
    base = load_settings().model_copy(update={"model": model})
    corpus = indexed_squad(base)
    rag_prompts = [prompts.build_prompt(q.question, rag.retrieve(corpus, q.question, base)[0])
               for q in select_questions(corpus, n, 1)]
    reference: list[str] | None = None
    print(f"\n{model} · {n} rag prompts · temperature 0 · a fresh server per setting")
    print(f"{'OLLAMA_NUM_PARALLEL':>20} {'threads':>8} {'answers/min':>12} {'vs sequential':>14} {'identical':>10}")
    for parallel in (1, 2):
        s = base.model_copy(update={"data_dir": Path(tempfile.mkdtemp(prefix="ragft-bench-parallel-")),
                                    "cache_dir": base.cache_root, "ollama_num_parallel": parallel})
        server = serving.start_server(s, lambda _: None)
        try:
            name = models.ensure_served(models.get_spec(model, s), s, server, lambda _: None)
            generation.generate(server, s, name, rag_prompts[0], prompts.RAG_SYSTEM)  # load
            def answer(prompt: str, server: serving.Server = server, s: Settings = s, name: str = name) -> str:
                return generation.generate(server, s, name, prompt, prompts.RAG_SYSTEM).text

            for threads in sorted({1, parallel}):
                started = time.perf_counter()
                with ThreadPoolExecutor(threads) as pool:
                    texts = list(pool.map(answer, rag_prompts))
                rate = n / (time.perf_counter() - started) * 60
                if reference is None:
                    reference, seq_rate = texts, rate
                same = sum(a == b for a, b in zip(texts, reference, strict=True))
                print(f"{parallel:>20} {threads:>8} {rate:>12.1f} {rate / seq_rate:>13.2f}× {same:>6}/{n}")
        finally:
            serving.stop_server(s)


if __name__ == "__main__":
    main()
