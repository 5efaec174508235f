"""Did the fine-tune keep what the base model could do? A fixed probe, answered by base and ft.

Training on one corpus can cost a small model abilities the corpus never exercises: closed-book
`qa` training cut ft_rag's reading to a third of rag's on SQuAD (README → Evaluation results).
Every evaluation with a fine-tuned arm therefore asks the base model and the fine-tuned model the
same probe (`data/probes.json`, written for ragft, shared by every corpus so it never overlaps a
team's eval set) before the verdict:

- general: closed-book questions a small instruct model answers (base arm's prompt);
- reading: invented facts with their passage in the rag arm's prompt — only reading finds them.

Scored by reference contained, paired per question (bootstrap CI of ft − base).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from eval.metrics import contains_reference
from eval.stats import paired_compare
from pipelines import prompts, rag
from pipelines.prompts import CLOSED_BOOK_SYSTEM

PROBE_FILE = Path(__file__).with_name("data") / "probes.json"
KINDS = {"general": "general knowledge", "reading": "reading ability"}
KEPT_WITHIN = 0.05  # a fine-tune "kept" an ability when it lost at most 5 points of the base model's score


@dataclass(frozen=True)
class ProbeItem:
    kind: str  # general | reading
    id: str
    question: str
    answers: tuple[str, ...]
    passage: str | None = None

    def prompt(self) -> tuple[str, str]:
        """(user prompt, system prompt) exactly as the base arm or the rag arm would send them."""
        if self.passage is None:
            return self.question, CLOSED_BOOK_SYSTEM
        return prompts.build_prompt(self.question, [rag.Hit(f"probe-{self.id}#0", f"probe-{self.id}", self.passage, 1.0)]), \
            prompts.RAG_SYSTEM


@cache
def load_probe(path: Path = PROBE_FILE) -> tuple[ProbeItem, ...]:
    data = json.loads(path.read_text(encoding="utf-8"))
    return tuple(ProbeItem(kind, d["id"], d["question"], tuple(d["answers"]), d.get("passage"))
                 for kind in KINDS for d in data[kind])


# The probe compares two models, not arms: the role column of a stored probe answer says which.
BASE_ROLE, TUNED_ROLE = "base", "ft"

def probe_items(per_kind: int | None = None) -> list[ProbeItem]:
    """The first `per_kind` items of each kind (all when None)."""
    items = load_probe()
    return [it for k in KINDS for it in [x for x in items if x.kind == k][:per_kind]]


def run_probe(generate: Callable[[str, str, str], str], roles: dict[str, str], done: set[tuple[str, str]],
              save: Callable[[dict[str, Any]], None], progress: Callable[[int, int], None] | None = None,
              per_kind: int | None = None) -> None:
    """Ask every probe item of every role ({BASE_ROLE: model, TUNED_ROLE: model}) not in `done` ((role, id) pairs).

    `generate(model, prompt, system) -> text`; each answer is saved as it arrives, so a killed
    evaluation resumes the probe where it stopped.
    """
    items = probe_items(per_kind)
    todo = [(role, model, it) for role, model in roles.items() for it in items if (role, it.id) not in done]
    for i, (role, model, it) in enumerate(todo, 1):
        prompt, system = it.prompt()
        text = generate(model, prompt, system)
        save({"role": role, "kind": it.kind, "pid": it.id, "model": model, "text": text,
              "value": contains_reference(text, it.answers)})
        if progress:
            progress(i, len(todo))


def summarise_probe(rows: list[dict[str, Any]], seed: int = 0) -> dict[str, Any] | None:
    """Per kind: base and ft scores, the paired difference with its CI, and the statement a report prints."""
    by = {(r["role"], r["pid"]): r["value"] for r in rows}
    out: dict[str, Any] = {}
    for kind, what in KINDS.items():
        ids = [it.id for it in load_probe() if it.kind == kind and (BASE_ROLE, it.id) in by and (TUNED_ROLE, it.id) in by]
        if not ids:
            continue
        base, ft = [by[(BASE_ROLE, i)] for i in ids], [by[(TUNED_ROLE, i)] for i in ids]
        p = paired_compare(BASE_ROLE, base, TUNED_ROLE, ft, [b > 0 for b in base], [f > 0 for f in ft], seed=seed)
        verdict = "kept" if p.diff.mean >= -KEPT_WITHIN else "lost"
        points = f"{100 * p.diff.mean:+.0f} points [{100 * p.diff.lo:+.0f}, {100 * p.diff.hi:+.0f}]"
        out[kind] = {"n": len(ids), BASE_ROLE: sum(base) / len(ids), TUNED_ROLE: sum(ft) / len(ids), "diff": p.diff.mean,
                     "lo": p.diff.lo, "hi": p.diff.hi, "p_mcnemar": p.p_mcnemar, "verdict": verdict,
                     "statement": f"the fine-tune {verdict} its {what}: {sum(ft):.0f}/{len(ids)} probe questions "
                                  f"right vs base {sum(base):.0f}/{len(ids)}, {points} (95% CI, paired)"}
    return out or None
