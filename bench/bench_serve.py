"""Serving benchmark: decode tokens/s of the served default model (Ollama) vs. the same
weights in-process with transformers (fp32), on the same prompts, in one run, plus the
memory-bandwidth bound (bytes read per token / measured bandwidth). Each further model given
(default: qwen2.5-coder-0.5b) gets its Ollama decode and prefill tokens/s against its own bound.

Run with `make bench` (`python bench/bench_serve.py [MODEL ...]`). Prints ratios measured side by
side; absolute numbers drift with load.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipelines import generation, models, serving  # noqa: E402
from pipelines.config import load_settings  # noqa: E402
from pipelines.prompts import CLOSED_BOOK_SYSTEM  # noqa: E402

PROMPTS = [
    "Explain how photosynthesis works, step by step.",
    "Write a short story about a lighthouse keeper.",
    "Describe the water cycle to a ten-year-old.",
    "List ten tips for writing clear technical documentation and explain each.",
    "What are the main differences between a train and a bus? Explain in detail.",
]
NEW_TOKENS = 128


def read_bandwidth(threads: int, mb: int = 512, repeats: int = 5) -> float:
    """GB/s for summing a large float32 array split over `threads` threads (numpy drops the GIL)."""
    a = np.ones(mb * (1 << 20) // 4, dtype=np.float32)
    parts = np.array_split(a, threads)
    best = float("inf")
    with ThreadPoolExecutor(threads) as pool:
        for _ in range(repeats):
            t = time.perf_counter()
            list(pool.map(np.sum, parts))
            best = min(best, time.perf_counter() - t)
    return a.nbytes / best / 1e9


# About the size of a rag prompt (three passages): prefill speed is what a rag answer waits for.
RAG_LIKE = "Context:\n" + "\n\n".join(
    f"[{i}] The harbour of Kelmouth, founded in 18{i}0, handles grain, timber and {i} kinds of fish; "
    "its master keeps a ledger of every ship, its cargo, its crew and the tides it sailed on. " * 4
    for i in range(1, 4)) + "\n\nQuestion: What does the harbour master keep?\nAnswer:"


def bench_ollama(settings, server, name) -> tuple[list[float], list[float]]:
    """Decode tok/s on the PROMPTS, and prefill tok/s on a rag-sized prompt (prompt cache emptied each time)."""
    opts = settings.model_copy(update={"max_tokens": NEW_TOKENS})
    generation.generate(server, opts, name, PROMPTS[0], CLOSED_BOOK_SYSTEM)  # load + warm up
    rates = []
    for p in PROMPTS:
        g = generation.generate(server, opts, name, p, CLOSED_BOOK_SYSTEM)
        rates.append(g.tokens_per_s)
    prefill = [generation.generate(server, opts.model_copy(update={"max_tokens": 1}), name, RAG_LIKE,
                                CLOSED_BOOK_SYSTEM).prompt_tokens_per_s for _ in range(3)]
    return rates, prefill


def bench_transformers(settings, weights: Path) -> list[float]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(settings.num_threads)
    tok = AutoTokenizer.from_pretrained(weights)
    model = AutoModelForCausalLM.from_pretrained(weights, dtype=torch.float32).eval()
    rates = []
    for i, p in enumerate([PROMPTS[0], *PROMPTS]):
        msgs = [{"role": "system", "content": CLOSED_BOOK_SYSTEM}, {"role": "user", "content": p}]
        enc = tok.apply_chat_template(msgs, add_generation_prompt=True, return_tensors="pt", return_dict=True)
        with torch.inference_mode():
            t = time.perf_counter()
            model.generate(**enc, max_new_tokens=1, do_sample=False)
            t_first = time.perf_counter() - t
            t = time.perf_counter()
            out = model.generate(**enc, max_new_tokens=NEW_TOKENS, do_sample=False)
            t_all = time.perf_counter() - t
        n = out.shape[1] - enc["input_ids"].shape[1]
        if i > 0 and n > 1:  # the first prompt warms up
            rates.append((n - 1) / max(t_all - t_first, 1e-9))
    return rates


def main() -> None:
    settings = load_settings()
    spec = models.get_spec(settings.model, settings)
    server = serving.ensure_server(settings)
    name = models.ensure_served(spec, settings, server)
    weights = models.ensure_hf_weights(spec, settings)
    served_bytes = generation.served_models(server, settings).get(name) or generation.served_models(server, settings)[f"{name}:latest"]
    fp32_bytes = (weights / "model.safetensors").stat().st_size

    bw = {t: read_bandwidth(t) for t in (1, settings.num_threads)}
    ol, prefill = bench_ollama(settings, server, name)
    tf = bench_transformers(settings, weights)
    bw_use = bw[settings.num_threads]
    rows = [
        ("ollama", f"{name} ({settings.quantization})", served_bytes, statistics.median(ol)),
        ("transformers", "fp32 safetensors", fp32_bytes, statistics.median(tf)),
    ]
    print(f"\nserving benchmark · {settings.model} · {settings.num_threads} threads · {NEW_TOKENS} new tokens · "
          f"{len(PROMPTS)} prompts (median)")
    print(f"memory read bandwidth: {bw[1]:.1f} GB/s (1 thread), {bw_use:.1f} GB/s ({settings.num_threads} threads)")
    print(f"{'engine':<13} {'weights':<34} {'MB/token':>9} {'tok/s':>8} {'bound tok/s':>12} {'of bound':>9}")
    result = {"model": settings.model, "threads": settings.num_threads, "bandwidth_gbs": bw, "engines": {}}
    for engine, desc, nbytes, rate in rows:
        bound = bw_use * 1e9 / nbytes
        print(f"{engine:<13} {desc:<34} {nbytes / 1e6:>9.0f} {rate:>8.1f} {bound:>12.1f} {rate / bound:>8.0%}")
        result["engines"][engine] = {"weights": desc, "bytes_per_token": nbytes, "tokens_per_s": rate,
                                     "bound_tokens_per_s": bound, "all_rates": ol if engine == "ollama" else tf}
    ratio = rows[0][3] / rows[1][3]
    print(f"ratio ollama / transformers decode tokens/s: {ratio:.2f}x")
    result["ratio"] = ratio
    others = sys.argv[1:] or [m for m in ("qwen2.5-coder-0.5b",) if m != settings.model]
    print(f"\nOllama per model ({settings.quantization}; prefill on a {len(RAG_LIKE.split())}-word rag-sized prompt)")
    print(f"{'model':<22} {'MB/token':>9} {'decode tok/s':>13} {'bound tok/s':>12} {'of bound':>9} {'prefill tok/s':>14}")
    result["models"] = {}
    for model_name in [settings.model, *others]:
        if model_name == settings.model:
            decode, pre, nbytes = ol, prefill, served_bytes
        else:
            other = settings.model_copy(update={"model": model_name})
            served = models.ensure_served(models.get_spec(model_name, other), other, server)
            nbytes = generation.served_models(server, other).get(served) or generation.served_models(server, other)[f"{served}:latest"]
            decode, pre = bench_ollama(other, server, served)
        bound = bw_use * 1e9 / nbytes
        d, f = statistics.median(decode), statistics.median(pre)
        print(f"{model_name:<22} {nbytes / 1e6:>9.0f} {d:>13.1f} {bound:>12.1f} {d / bound:>8.0%} {f:>14.1f}")
        result["models"][model_name] = {"bytes_per_token": nbytes, "decode_tokens_per_s": d, "bound_tokens_per_s": bound,
                                        "prefill_tokens_per_s": f}
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / "serve.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
