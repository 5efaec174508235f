"""Evaluation benchmark: wall time of a 100-question four-arm run with non-LLM scores, and
answers per minute per arm. Imports, indexes and fine-tunes the SQuAD subset first when that has not been done. Part of `make bench`.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from eval.report import summarise  # noqa: E402
from eval.runner import EvalConfig, run_eval  # noqa: E402
from eval.store import Store  # noqa: E402
from pipelines import corpus as corpora  # noqa: E402
from pipelines import (  # noqa: E402
    finetune,
    finetune_runs,  # noqa: E402
    importers,
    rag,
    serving,
)
from pipelines.config import load_settings  # noqa: E402
from pipelines.train import LoraParams  # noqa: E402

SQUAD = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "squad-v1.1-dev" / "squad-dev-4-articles.json"


def main() -> None:
    name = sys.argv[1] if len(sys.argv) > 1 else "squad"
    settings = load_settings()
    if name == "squad" and "squad" not in corpora.list_corpora(settings):
        importers.import_squad(SQUAD, settings, "squad")
    corpus = corpora.load(name, settings)
    rag.build_index(corpus, settings)  # incremental: nothing to do when it is current
    if finetune_runs.latest_run(name, settings) is None:
        server = serving.ensure_server(settings)
        finetune.finetune(corpus, settings, server, ["qa"], LoraParams())
    store = Store(settings.runs_db)
    started = time.perf_counter()
    run_id = run_eval(corpus, EvalConfig(["base", "rag", "ft", "ft_rag"], limit=100), settings, store,
                      log=lambda _: None, rerun=True)
    wall = time.perf_counter() - started
    s = summarise(store, run_id)
    print(f"\n{s['n_questions']}-question four-arm run on {name} (answering + non-LLM scoring): {wall / 60:.1f} min")
    print(f"{'arm':<7} {'answers/min':>12} {'p50 ms':>8} {'p95 ms':>8} {'tokens/s':>9}")
    for arm, v in s["latency"].items():
        print(f"{arm:<7} {v['answers_per_min']:>12.1f} {v['p50_ms']:>8.0f} {v['p95_ms']:>8.0f} {v['tokens_per_s']:>9.1f}")


if __name__ == "__main__":
    main()
