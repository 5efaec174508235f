"""The forgetting probe's data, prompts and statements (pure logic; the live run is in test_eval.py)."""

from eval import forgetting
from pipelines import prompts
from pipelines.prompts import CLOSED_BOOK_SYSTEM


def test_probe_items_load_and_use_the_arms_prompts() -> None:
    items = forgetting.load_probe()
    kinds = {k: [it for it in items if it.kind == k] for k in forgetting.KINDS}
    # 96 a kind: one item is about 1 point, so "kept within 5 points" is not decided by one or two items
    assert len(kinds["general"]) == len(kinds["reading"]) == 96
    assert len({it.id for it in items}) == len(items)
    g, r = kinds["general"][0], kinds["reading"][0]
    assert g.prompt() == (g.question, CLOSED_BOOK_SYSTEM)
    prompt, system = r.prompt()
    assert system == prompts.RAG_SYSTEM and r.passage in prompt and prompt.endswith(f"Question: {r.question}\nAnswer:")
    # every reading answer is in its passage: only reading can find it
    assert all(any(a.lower() in (it.passage or "").lower() for a in it.answers) for it in kinds["reading"])


def _rows(base_right: set[str], ft_right: set[str]) -> list[dict]:
    return [{"role": role, "kind": it.kind, "pid": it.id, "value": float(it.id in right)}
            for role, right in (("base", base_right), ("ft", ft_right)) for it in forgetting.load_probe()]


def test_run_probe_resumes_and_statements_say_kept_or_lost() -> None:
    saved: list[dict] = []
    items = forgetting.load_probe()
    done = {("base", it.id) for it in items}  # base answered before a kill
    forgetting.run_probe(lambda model, p, s: "Paris" if model == "f" else "", {"base": "b", "ft": "f"}, done, saved.append)
    assert {r["role"] for r in saved} == {"ft"} and len(saved) == len(items)
    assert next(r for r in saved if r["pid"] == "g01")["value"] == 1.0

    general = [it.id for it in items if it.kind == "general"]
    reading = [it.id for it in items if it.kind == "reading"]
    out = forgetting.summarise_probe(_rows(set(general[:20]) | set(reading[:20]), set(general[:19]) | set(reading[:10])))
    assert out is not None
    assert out["general"]["verdict"] == "kept" and out["general"]["statement"].startswith("the fine-tune kept its general")
    n = len(reading)
    assert out["reading"]["verdict"] == "lost" and f"10/{n} probe questions right vs base 20/{n}" in out["reading"]["statement"]
    assert out["reading"]["hi"] < 0  # a CI, paired
    assert forgetting.summarise_probe([]) is None
