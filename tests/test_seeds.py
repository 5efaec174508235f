"""The report's training-seed line: each fine-tuned arm over the seeds the store evaluated on the
same questions, and whether that spread is larger than the difference the fine-tune made."""

from __future__ import annotations

from eval.report import summarise
from eval.store import Store
from eval.views import seed_lines
from pipelines.config import Settings

QIDS = [f"q{i}" for i in range(10)]


def _run(store: Store, run_id: str, train_seed: int, correct: dict[str, int], params: dict | None = None,
         limit: int = 10) -> None:
    """A finished run whose arm gets its first `correct[arm]` questions right (contains = 1)."""
    arms = list(correct)
    store.ensure_run(run_id, "k", arms, {"limit": limit, "seed": 1, "n_questions": 10, "model": "m"})
    for arm in arms:
        for i, qid in enumerate(QIDS):
            ok = i < correct[arm]
            store.save_answer(run_id, {"arm": arm, "qid": qid, "question": qid, "model": "m",
                                       "text": "Ida" if ok else "no", "passages": [], "retrieval_ms": 0.0,
                                       "ttft_ms": 1.0, "total_ms": 10.0, "prompt_tokens": 1, "output_tokens": 1,
                                       "eval_ms": 1.0, "tokens_per_s": 10.0})
            store.save_scores(run_id, [(arm, qid, "contains", 1.0 if ok else 0.0, None)])
    ft = {"run_id": f"ft-{train_seed}", "recipes": ["raft"], "params": {**(params or {"r": 32}), "seed": train_seed}}
    store.set_status(run_id, "done", {"finetune": ft})


def test_the_seed_spread_is_shown_and_said_to_decide_when_it_exceeds_the_fine_tune_effect(settings: Settings) -> None:
    store = Store(settings.runs_db)
    _run(store, "r42", 42, {"base": 1, "rag": 4, "ft": 1, "ft_rag": 5})
    assert summarise(store, "r42")["seed_spread"] is None  # one seed: nothing to say
    _run(store, "r7", 7, {"base": 1, "rag": 4, "ft": 2, "ft_rag": 8})
    _run(store, "other-params", 13, {"base": 1, "rag": 4, "ft": 9, "ft_rag": 9}, params={"r": 8})  # not the same setting
    _run(store, "other-limit", 13, {"base": 1, "rag": 4, "ft": 9, "ft_rag": 9}, limit=20)  # not the same questions
    s = summarise(store, "r42")
    spread = s["seed_spread"]
    assert spread["seeds"] == [7, 42] and spread["runs"] == ["r7", "r42"]
    ft_rag = spread["arms"]["ft_rag"]
    assert (ft_rag["min"], ft_rag["max"]) == (0.5, 0.8) and abs(ft_rag["spread"] - 0.3) < 1e-9
    assert abs(ft_rag["diff"] - 0.1) < 1e-9 and ft_rag["hinges"]  # 30-point spread > this run's +10 over rag
    assert spread["arms"]["ft"]["hinges"]  # ft − base = 0 here, any spread exceeds it
    lines = seed_lines(s)
    assert any(line.startswith("ft_rag over training seeds 7, 42: 0.50–0.80") and "could reverse" in line
               for line in lines)
    assert any("could reverse" in r for r in s["recommendation"]["reasons"])


def test_a_spread_smaller_than_the_effect_does_not_decide(settings: Settings) -> None:
    store = Store(settings.runs_db)
    _run(store, "a", 42, {"base": 1, "rag": 2, "ft": 1, "ft_rag": 8})
    _run(store, "b", 7, {"base": 1, "rag": 2, "ft": 1, "ft_rag": 9})
    line = next(x for x in seed_lines(summarise(store, "b")) if x.startswith("ft_rag"))
    assert "spread 10 points" in line and "the seed does not decide it" in line and "+70 points" in line


def test_the_leakage_statement_names_a_mixed_in_corpus(settings: Settings) -> None:
    store = Store(settings.runs_db)
    _run(store, "m", 42, {"base": 1, "ft": 2})
    ft = {"run_id": "ft-m", "recipes": ["raft"], "params": {"seed": 42},
          "leakage": {"verbatim": 0, "near_verbatim": 0, "paraphrase": 3},
          "mix": {"corpus": "squad", "examples": 35, "share": 0.25}}
    store.set_status("m", "done", {"finetune": ft})
    statement = summarise(store, "m")["leakage_statement"]
    assert statement.endswith("; 35 reading examples mixed in from corpus 'squad' (its training questions)")
