"""Does the verdict hinge on the fine-tune's training seed?

A fine-tune's score moves with its seed (data order, dropout, LoRA init): on the SQuAD subset
three raft seeds put ft_rag at 0.39, 0.42 and 0.43. One evaluation sees one seed. When the store
holds evaluations of the same questions with fine-tunes that differ only in their seed, the
report shows each fine-tuned arm's range over those seeds next to the difference the fine-tune
made in this run (ft − base, ft_rag − rag), and says when the range is the larger of the two:
then another seed could have reversed what this run measured.
"""

from __future__ import annotations

import json
from typing import Any

from eval.records import PairedRow, RunRecord
from eval.scoring import PRIMARY
from eval.store import Store
from pipelines.arms import ARMS, finetuned_arms


def _same_setting(run: RunRecord, other: RunRecord) -> bool:
    """Same corpus, questions and base model; a fine-tune with the same recipe and parameters but its seed."""
    a, b = run["config"], other["config"]
    fa, fb = (run["info"] or {}).get("finetune") or {}, (other["info"] or {}).get("finetune") or {}
    pa, pb = dict(fa.get("params") or {}), dict(fb.get("params") or {})
    pa.pop("seed", None), pb.pop("seed", None)
    return (run["corpus"] == other["corpus"] and all(a.get(k) == b.get(k) for k in ("model", "limit", "seed",
                                                                                    "n_questions", "quantization",
                                                                                    "index", "decoding"))
            and bool(pa) and pa == pb and fa.get("recipes") == fb.get("recipes"))


def _mean(store: Store, run_id: str, arm: str) -> float | None:
    vals = [s["value"] for s in store.scores(run_id) if s["arm"] == arm and s["metric"] == PRIMARY
            and s["value"] is not None]
    return sum(vals) / len(vals) if vals else None


def seed_spread(store: Store, run_id: str, paired: list[PairedRow]) -> dict[str, Any] | None:
    """Each fine-tuned arm over the training seeds the store has evaluated on these questions, or
    None when it holds only this run's seed. `paired`: this run's paired comparisons (summary)."""
    run = store.run(run_id)
    ft_arms = finetuned_arms(run["arms"])
    ft = (run["info"] or {}).get("finetune") or {}
    if not ft_arms or not ft.get("params"):
        return None
    by_seed: dict[int, str] = {}  # training seed → the newest complete evaluation with it
    for r in store.runs():
        if r["status"] != "done" or not set(ft_arms) <= set(r["arms"]):
            continue
        other = RunRecord(run_id=r["run_id"], corpus=r["corpus"], arms=r["arms"], config=json.loads(r["config"]),
                          created=r["created"], status=r["status"], info=json.loads(r["info"] or "{}"))
        if r["run_id"] == run_id or _same_setting(run, other):
            by_seed[int(other["info"]["finetune"]["params"]["seed"])] = r["run_id"]
    by_seed[int(ft["params"]["seed"])] = run_id
    if len(by_seed) < 2:
        return None
    arms: dict[str, Any] = {}
    for arm in ft_arms:
        scores = {seed: _mean(store, rid, arm) for seed, rid in sorted(by_seed.items())}
        known = [v for v in scores.values() if v is not None]
        diff = next((p["diff"] for p in paired if p["metric"] == PRIMARY and p["a"] == ARMS[arm].counterpart
                     and p["b"] == arm), None)
        spread = max(known) - min(known)
        arms[arm] = {"by_seed": scores, "mean": sum(known) / len(known), "min": min(known), "max": max(known),
                     "spread": spread, "vs": ARMS[arm].counterpart, "diff": diff,
                     "hinges": diff is not None and spread > abs(diff)}
    return {"seeds": sorted(by_seed), "runs": [by_seed[s] for s in sorted(by_seed)], "arms": arms}


def spread_lines(spread: dict[str, Any] | None) -> list[str]:
    """One sentence per fine-tuned arm (CLI, app and report.html)."""
    if not spread:
        return []
    seeds = ", ".join(str(s) for s in spread["seeds"])
    out = []
    for arm, a in spread["arms"].items():
        head = (f"{arm} over training seeds {seeds}: {a['min']:.2f}–{a['max']:.2f} (mean {a['mean']:.2f}, "
                f"spread {100 * a['spread']:.0f} points)")
        if a["diff"] is None:
            out.append(head)
        elif a["hinges"]:
            out.append(f"{head} — larger than its difference from {a['vs']} in this run ({100 * a['diff']:+.0f} "
                       f"points): another training seed could reverse it")
        else:
            out.append(f"{head} — smaller than its difference from {a['vs']} in this run ({100 * a['diff']:+.0f} "
                       "points): the seed does not decide it")
    return out
