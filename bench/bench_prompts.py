"""Rag prompt variants side by side: the same retrieved passages, one server, temperature 0.

`python bench/bench_prompts.py [MODEL] [N]` (default: qwen2.5-coder-0.5b, 40 SQuAD-subset
questions, seed 1). Retrieval runs once per question; only the prompt changes between variants:
the system prompt, the order of the passages (best last, as the rag arm does, or best first),
and how many are given. Prints reference contained, answers/min and prompt tokens per variant.
Part of `make bench`.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.squad import indexed_squad  # noqa: E402
from eval.metrics import contains_reference  # noqa: E402
from eval.runner import select_questions  # noqa: E402
from pipelines import generation, models, prompts, rag, serving  # noqa: E402
from pipelines.config import load_settings  # noqa: E402

SHORT = ("Answer the question using the context passages. Reply with the shortest phrase from the passages "
         "that answers it, without explanation. If the passages do not contain the answer, say \"I don't know.\"")
# name: (system prompt, best passage last?, passages)
VARIANTS = {
    "ragft (best last, k=3)": (prompts.RAG_SYSTEM, True, 3),
    "best first, k=3": (prompts.RAG_SYSTEM, False, 3),
    "short-phrase system, best first, k=3": (SHORT, False, 3),
    "short-phrase system, best first, k=2": (SHORT, False, 2),
}


def prompt(question: str, hits: list[rag.Hit], best_last: bool) -> str:
    if best_last:
        return prompts.build_prompt(question, hits)
    blocks = [f"[{i}] (source: {h.doc_id})\n{h.text}" for i, h in enumerate(hits, 1)]
    return "Context:\n" + "\n\n".join(blocks) + f"\n\nQuestion: {question}\nAnswer:"


def main() -> None:
    model = sys.argv[1] if len(sys.argv) > 1 else "qwen2.5-coder-0.5b"
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 40
    s = load_settings().model_copy(update={"model": model})
    corpus = indexed_squad(s)
    server = serving.ensure_server(s)
    name = models.ensure_served(models.get_spec(model, s), s, server)
    questions = select_questions(corpus, n, 1)
    hits = {q.id: rag.retrieve(corpus, q.question, s, k=max(k for _, _, k in VARIANTS.values()))[0] for q in questions}
    print(f"\nrag prompt variants · {model} · {n} SQuAD-subset questions (seed 1) · same passages, temperature 0")
    print(f"{'variant':<40} {'contains':>9} {'answers/min':>12} {'prompt tok':>11}")
    results = {}
    for label, (system, best_last, k) in VARIANTS.items():
        started, ok, tokens, rows = time.perf_counter(), 0.0, 0, []
        for q in questions:
            gen = generation.generate(server, s, name, prompt(q.question, hits[q.id][:k], best_last), system)
            score = contains_reference(gen.text, q.answers)
            ok, tokens = ok + score, tokens + gen.prompt_tokens
            rows.append({"question": q.question, "references": q.answers, "answer": gen.text, "contains": score})
        wall = time.perf_counter() - started
        print(f"{label:<40} {int(ok):>5}/{n:<3} {n / wall * 60:>12.1f} {tokens / n:>11.0f}")
        results[label] = {"contains": ok / n, "answers_per_min": n / wall * 60, "rows": rows}
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / f"prompts-{model}.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
