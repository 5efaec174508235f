"""Prompt cache off (the default) vs on, side by side in one run.

Are answers independent of the request before them, and at what speed? Ten base-arm answers
(one question asked six times between others), twice per setting alternately, on a fresh
server of SmolLM2 (the shared weights cache is reused). Part of `make bench`.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipelines import models, serving  # noqa: E402
from pipelines.arms import get_arm  # noqa: E402
from pipelines.config import load_settings  # noqa: E402

REPEATED = "Name a primary colour."
QUESTIONS = [REPEATED, "What is the capital of France?", REPEATED, "Tell me about the sea.", REPEATED] * 2


def main() -> None:
    base = load_settings()
    s = base.model_copy(update={"data_dir": Path(tempfile.mkdtemp(prefix="ragft-bench-cache-")),
                                "cache_dir": base.cache_dir or base.data_dir / "cache", "model": "smollm2-135m"})
    server = serving.start_server(s, print)
    try:
        models.ensure_served(models.get_spec(s.model, s), s, server, print)
        print(f"\n{len(QUESTIONS)} base-arm answers per pass; '{REPEATED}' asked {QUESTIONS.count(REPEATED)} times")
        print(f"{'prompt_cache':<13} {'repeats identical':<20} {'answers/min':>12}")
        for cache in (False, True, False, True):
            arm = get_arm("base", s.model_copy(update={"prompt_cache": cache}), server, None)
            started = time.perf_counter()
            texts = [arm.answer(q).text for q in QUESTIONS]
            wall = time.perf_counter() - started
            repeats = [t for q, t in zip(QUESTIONS, texts, strict=True) if q == REPEATED]
            same = sum(t == repeats[0] for t in repeats)
            print(f"{str(cache):<13} {f'{same}/{len(repeats)}':<20} {len(QUESTIONS) / wall * 60:>12.1f}")
    finally:
        serving.stop_server(s)


if __name__ == "__main__":
    main()
