"""Knowledge-injection check: fine-tune the closed-book `qa` recipe on a corpus, then answer its held-out
eval questions closed book with the base and the fine-tuned model. Prints training time and
both arms' scores (reference contained, token F1) measured in the same run.

Usage: python bench/bench_finetune.py [CORPUS] (default: port-vellmar). Part of `make bench`.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from eval.metrics import contains_reference, token_f1  # noqa: E402
from pipelines import corpus as corpora  # noqa: E402
from pipelines import finetune as ft  # noqa: E402
from pipelines import models, serving  # noqa: E402
from pipelines.arms import get_arm  # noqa: E402
from pipelines.config import load_settings  # noqa: E402
from pipelines.train import LoraParams  # noqa: E402


def main() -> None:
    name = sys.argv[1] if len(sys.argv) > 1 else "port-vellmar"
    settings = load_settings()
    corpus = corpora.load(name, settings)
    server = serving.ensure_server(settings)
    models.ensure_served(models.get_spec(settings.model, settings), settings, server)
    started = time.perf_counter()
    record = ft.finetune(corpus, settings, server, ["qa"], LoraParams(), log=lambda m: print(m, flush=True))
    total_s = time.perf_counter() - started
    scores: dict[str, dict[str, float]] = {}
    rows = []
    for arm_name in ("base", "ft"):
        arm = get_arm(arm_name, settings, server, corpus)
        contained = f1 = 0.0
        for qa in corpus.eval:
            a = arm.answer(qa.question)
            c, f = contains_reference(a.text, qa.answers), token_f1(a.text, qa.answers)
            contained += c
            f1 += f
            rows.append({"arm": arm_name, "id": qa.id, "question": qa.question, "answer": a.text, "contained": c, "f1": f})
        n = len(corpus.eval)
        scores[arm_name] = {"contained": contained, "n": n, "f1": f1 / n}
    t = record["training"]
    print(f"\nfine-tune on {name}: recipe qa, {t['examples']} examples, {t['steps']} steps, {t['train_tokens']} tokens, "
          f"training {t['wall_s']:.0f} s ({t['tokens_per_s']:.0f} tok/s), whole run incl. merge + Ollama create "
          f"{total_s:.0f} s, peak RSS {t['peak_rss_mb']:.0f} MB; leakage {record['leakage']}")
    print(f"{'arm':<6} {'reference contained':>20} {'token F1':>9}")
    for arm_name, s in scores.items():
        print(f"{arm_name:<6} {int(s['contained']):>12}/{s['n']:<7} {s['f1']:>9.3f}")
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / "finetune.json").write_text(json.dumps({"record": record, "scores": scores, "answers": rows,
                                                   "total_s": total_s}, indent=1, default=str))


if __name__ == "__main__":
    main()
