"""Eval set × arms → answers (SQLite, as they arrive) → scores. Resumable: a finished answer is
never recomputed, a killed run continues where it stopped, and no question is answered twice.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import tenacity
from filelock import FileLock, Timeout

from eval import forgetting, history, scoring
from eval import judge as judge_mod
from eval.records import NewAnswer
from eval.store import Store
from pipelines import corpus as corpora
from pipelines import finetune_runs, generation, models, rag, reference, serving
from pipelines.arms import Answer, check_arm_name, finetuned_arms, get_arm, hosted_arms, retrieval_arms
from pipelines.config import Settings
from pipelines.corpus import QA, Corpus
from pipelines.errors import CorpusError, OllamaUnavailable, RagftError

Progress = Callable[[int, int, str], None]  # done, total, what


@dataclass
class EvalConfig:
    arms: list[str]
    limit: int | None = None
    seed: int = 42
    concurrency: int = 1
    judge: str | None = None


def select_questions(corpus: Corpus, limit: int | None, seed: int) -> list[QA]:
    """All eval questions, or a seeded sample of `limit` of them (same seed → same questions)."""
    qs = sorted(corpus.eval, key=lambda q: q.id)
    if limit is not None and limit < len(qs):
        qs = sorted(random.Random(seed).sample(qs, limit), key=lambda q: q.id)
    return qs


def run_id_for(corpus: Corpus, cfg: EvalConfig, settings: Settings, ft_models: dict[str, str],
               judge_endpoint: str | None = None, reference_model: dict[str, str] | None = None,
               ft_run: str | None = None) -> str:
    """Same corpus, questions, arms and settings → same id, so re-running resumes instead of repeating.

    `ft_run` is the fine-tune's run id: a served model's name is reused once the model is gone
    from the server, so the name alone would resume an old fine-tune's answers."""
    questions = [(q.id, q.question, q.answers) for q in select_questions(corpus, cfg.limit, cfg.seed)]
    index = rag.index_identity(corpus, settings) if retrieval_arms(cfg.arms) else None
    key = json.dumps({"corpus": corpus.name, "questions": questions, "arms": sorted(cfg.arms), "judge": cfg.judge,
                      **({"index": index} if index else {}),
                      **({"judge_endpoint": judge_endpoint} if judge_endpoint else {}),
                      **({"reference": reference_model} if reference_model else {}),
                      **({"ft_run": ft_run} if ft_run else {}),
                      "model": settings.model, "quant": settings.quantization, "decoding": settings.decoding_options(),
                      "top_k": settings.top_k, "mode": settings.retrieval_mode, "ft": ft_models}, sort_keys=True)
    return f"{models.safe_name(corpus.name)}-{hashlib.sha256(key.encode()).hexdigest()[:10]}"


def answer_row(arm: str, qa: QA, a: Answer) -> NewAnswer:
    """The row the store keeps of one answer (every front door and fixture writes answers through this)."""
    g = a.generation
    return {"arm": arm, "qid": qa.id, "question": qa.question, "model": a.model, "text": a.text,
            "passages": [asdict(p) for p in a.passages], "retrieval_ms": a.retrieval_ms, "ttft_ms": g.ttft_ms,
            "total_ms": g.total_ms + a.retrieval_ms, "prompt_tokens": g.prompt_tokens, "output_tokens": g.output_tokens,
            "eval_ms": g.eval_ms, "tokens_per_s": g.tokens_per_s, "error": a.error}


def run_eval(corpus: Corpus, cfg: EvalConfig, settings: Settings, store: Store,
             progress: Progress | None = None, log: Callable[[str], None] = print, rerun: bool = False,
             started: Callable[[str], None] | None = None) -> str:
    """Answer and score everything not yet stored; returns the run id (`started` hears it before the first answer)."""
    _check_inputs(corpus, cfg, settings)
    server = serving.ensure_server(settings, log)
    models.ensure_served(models.get_spec(settings.model, settings), settings, server, log)
    arms = {name: get_arm(name, settings, server, corpus) for name in cfg.arms}  # a missing ft model fails here
    ft_models = {n: arms[n].model for n in finetuned_arms(arms)}
    ref = reference.resolve(settings) if hosted_arms(arms) else None  # prices and key checked before any answer
    judge_spec = None
    if cfg.judge:
        generators = {models.served_name(models.get_spec(settings.model, settings), settings), *ft_models.values()}
        judge_spec = judge_mod.resolve(cfg.judge, settings, server, sorted(generators), log)
        if judge_spec.warning:
            log(f"warning: {judge_spec.warning}")
        judge_mod.api_key(judge_spec)  # a missing key fails now, not after every answer is in
    # A remote judge's URL is part of the run's identity (its path only, never a key).
    tuned = finetune_runs.latest_run(corpus.name, settings) if ft_models else None
    run_id = run_id_for(corpus, cfg, settings, ft_models, None if judge_spec is None or judge_spec.local
                        else judge_spec.base_url, {"model": ref.model, "endpoint": ref.base_url} if ref else None,
                        tuned["run_id"] if tuned else None)
    if started:
        started(run_id)
    questions = select_questions(corpus, cfg.limit, cfg.seed)
    info = _ft_info(settings, tuned) if ft_models else {}
    lock = _RunLock(history.lock_path(settings, run_id))  # released when this process ends, however it ends
    try:
        if rerun and run_id in {r["run_id"] for r in store.runs()}:
            log(f"answering run {run_id} again; the previous database is backed up at {store.delete_run(run_id)}")
        resumed = store.ensure_run(run_id, corpus.name, cfg.arms, {
            **asdict(cfg), "model": settings.model, "quantization": settings.quantization,
            "decoding": settings.decoding_options(), "top_k": settings.top_k, "retrieval_mode": settings.retrieval_mode,
            "n_questions": len(questions), "probe_items": settings.probe_items,
            "index": rag.index_identity(corpus, settings) if retrieval_arms(cfg.arms) else None,
            "judge": judge_spec.describe() if judge_spec else None, "reference": ref.describe() if ref else None})
        total = len(questions) * len(cfg.arms)
        done = sum(len(store.answered(run_id, a)) for a in cfg.arms)
        if resumed and done < total:
            log(f"resuming run {run_id}: {done} of {total} answers already stored")
            store.add_event(run_id, "resumed", f"{done} of {total} answers already stored; answering the rest")
        try:
            for name, arm in arms.items():
                done = _answer_arm(name, arm, questions, cfg.concurrency, server, settings, store, run_id, log,
                                   progress, done, total)
        except Exception as exc:
            _record_restarts(server, store, run_id, log)
            store.add_event(run_id, "stopped", f"{type(exc).__name__}: {exc}"[:500])
            store.set_status(run_id, "stopped")
            raise
        if ft_models and settings.probe_items:
            _probe(run_id, server, settings, store, next(iter(ft_models.values())), progress)
        # The judge runs after every answer is in, so it never competes with the timed answers.
        judge = judge_mod.Judge(judge_spec, settings) if judge_spec else None
        try:
            score_run(run_id, corpus, store, progress, judge)
        finally:
            if judge:
                judge.close()
        if judge and judge.timing():
            info["judge_timing"] = judge.timing()
        store.set_status(run_id, "done", info)
    finally:
        lock.release()
    return run_id


def _check_inputs(corpus: Corpus, cfg: EvalConfig, settings: Settings) -> None:
    """Everything that would make the run measure something other than the arms fails before any answer."""
    for arm_name in cfg.arms:
        check_arm_name(arm_name)
    if not corpus.eval:
        raise RagftError(f"corpus '{corpus.name}' has no eval questions (qa/eval.jsonl)", "add held-out questions to evaluate")
    if missing := corpora.missing_sources(corpus):
        # Retrieval can never find a document the corpus lacks: the scores would measure the gap.
        docs = sorted({s for q in missing for s in q.source_ids if s not in corpus.doc_paths})
        raise CorpusError(f"{len(missing)} of {len(corpus.eval)} eval questions of corpus '{corpus.name}' cite documents "
                          f"it does not have ({', '.join(docs[:3])}{' …' if len(docs) > 3 else ''})",
                          f"add those documents to {corpus.root / 'docs'}, or remove the questions from qa/eval.jsonl")
    if retrieval_arms(cfg.arms):
        rag.require_index(corpus, settings)


def _answer_arm(name: str, arm: Any, questions: list[QA], concurrency: int, server: serving.Server, settings: Settings,
                store: Store, run_id: str, log: Callable[[str], None], progress: Progress | None, done: int,
                total: int) -> int:
    """Answer (and store, one by one) the questions this arm has not answered yet; returns answers done so far."""
    todo = [q for q in questions if q.id not in store.answered(run_id, name)]

    def answer(qa: QA) -> None:
        a = _answer_with_retries(arm, qa, server, settings, store, run_id, name, log)
        for wait in a.waits:
            store.add_event(run_id, "rate_limited", f"{name}/{qa.id}: {wait}")
        if a.error:
            store.add_event(run_id, "answer_failed", f"{name}/{qa.id}: {a.error}")
            log(f"warning: {name}/{qa.id} failed: {a.error} (counted; scored as an empty answer)")
        store.save_answer(run_id, answer_row(name, qa, a))

    pool = ThreadPoolExecutor(max(1, concurrency))
    try:
        for future in as_completed([pool.submit(answer, q) for q in todo]):
            future.result()
            done += 1
            _record_restarts(server, store, run_id, log)
            if progress:
                progress(done, total, f"answering ({name})")
    finally:
        # On an interrupt, answers in flight finish and are stored; queued ones are dropped.
        pool.shutdown(wait=True, cancel_futures=True)
    return done


def _probe(run_id: str, server: serving.Server, settings: Settings, store: Store, ft_model: str,
           progress: Progress | None) -> None:
    """The forgetting probe: base and the fine-tuned model answer the same fixed questions (eval/forgetting.py)."""
    base = models.served_name(models.get_spec(settings.model, settings), settings)
    done = {(r["role"], r["pid"]) for r in store.probes(run_id)}
    roles = {forgetting.BASE_ROLE: base, forgetting.TUNED_ROLE: ft_model}
    forgetting.run_probe(lambda model, prompt, system: generation.generate(server, settings, model, prompt, system).text.strip(),
                         roles, done, lambda row: store.save_probe(run_id, row),
                         (lambda i, n: progress(i, n, "forgetting probe (base and ft)")) if progress else None,
                         settings.probe_items)


class _RunLock:
    """One process answers a run at a time; a second one (another terminal, the app) is told so.

    An OS file lock (filelock's flock), so a killed process never leaves a stale lock behind; who
    holds it is written beside it (history.holder_path) for the message a second process gets.
    """

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = FileLock(path, blocking=False)
        try:
            self._lock.acquire()
        except Timeout:
            holder = ""
            with contextlib.suppress(OSError):
                holder = history.holder_path(path).read_text(encoding="ascii", errors="replace").strip()
            raise RagftError(f"run {path.stem} is being answered right now by {holder or 'another process'}",
                             "wait for it to finish (`ragft runs` shows its progress), or evaluate different "
                             "questions or arms") from None
        history.holder_path(path).write_text(f"ragft pid {os.getpid()}", encoding="ascii")

    def release(self) -> None:
        self._lock.release()


def _answer_with_retries(arm: Any, qa: QA, server: serving.Server, settings: Settings, store: Store, run_id: str,
                         name: str, log: Callable[[str], None]) -> Answer:
    """Answer one question; if Ollama went away, wait with growing pauses and bring it back.

    `generation.generate` already restarts a dead server once; this outer loop covers a server that
    dies again or takes a while to come back. Bounded: after `answer_retries` the run stops
    (and resumes later from what is stored).
    """
    failures: list[str] = []

    def note_retry(state: tenacity.RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        wait = state.next_action.sleep if state.next_action else 0.0
        failures.append(str(getattr(exc, "message", exc)))
        note = (f"{name}/{qa.id}: {failures[-1]}; retry {state.attempt_number} of "
                f"{settings.answer_retries - 1} in {wait:.0f} s")
        store.add_event(run_id, "retry", note)
        log(f"warning: {note}")

    for attempt in tenacity.Retrying(stop=tenacity.stop_after_attempt(settings.answer_retries),
                                     wait=tenacity.wait_exponential(multiplier=settings.retry_backoff_s),
                                     retry=tenacity.retry_if_exception_type(OllamaUnavailable),
                                     before_sleep=note_retry, reraise=True):
        with attempt:
            if attempt.retry_state.attempt_number > 1 and server.owned:  # after the pause: bring the server back
                with contextlib.suppress(OllamaUnavailable):
                    generation.restart(server, settings, failures[-1])
            a: Answer = arm.answer(qa.question)
            if a.generation and a.generation.done_reason == generation.REPEAT_ABORT:
                store.add_event(run_id, "repeat_limit", f"{name}/{qa.id}: Ollama cut the answer after one token repeated "
                                                        "31 times; it is scored as given (no token counts from Ollama)")
            return a
    raise AssertionError("unreachable: tenacity returns or re-raises")


def _record_restarts(server: serving.Server, store: Store, run_id: str, log: Callable[[str], None]) -> None:
    while server.restarts:
        note = server.restarts.pop(0)
        store.add_event(run_id, "ollama_restarted", note)
        log(f"warning: {note}")


def _ft_info(settings: Settings, run: finetune_runs.FinetuneRun | None) -> dict[str, Any]:
    """The report's record of the fine-tune the ft arms serve (the run the evaluation's id names)."""
    if not run:
        return {"finetune": None}
    info = {k: run.get(k) for k in ("run_id", "ollama_model", "recipes", "leakage", "allow_leakage", "training",
                                    "fact_coverage", "params", "mix")}
    # every eval item's fact class (taught / not taught), so the report can split each arm by it
    guard = finetune_runs.runs_dir(settings) / str(run["run_id"]) / "leakage.json"
    with contextlib.suppress(OSError, ValueError):
        info["facts"] = json.loads(guard.read_text(encoding="utf-8")).get("facts")
    return {"finetune": info}


def score_run(run_id: str, corpus: Corpus, store: Store, progress: Progress | None = None,
              judge: judge_mod.Judge | None = None) -> None:
    """Score every stored answer that has no scores yet (also resumable); judge metrics when given."""
    by_id = {q.id: q for q in corpus.eval}
    done = {(a, q) for a, q, _ in store.scored(run_id)}
    todo = [a for a in store.answers(run_id) if (a["arm"], a["qid"]) not in done]
    if not todo:
        return
    metrics = scoring.ragas_metrics()
    for i, a in enumerate(todo, 1):
        qa = by_id.get(a["qid"])
        if qa is None:
            continue
        rows = scoring.score_answer(a["arm"], a["qid"], a["text"], qa.answers, qa.source_ids, a["passages"], metrics)
        if judge:
            rows += judge.score(a["arm"], a["qid"], qa.question, a["text"], qa.answers[0] if qa.answers else "",
                                a["passages"])
        store.save_scores(run_id, rows)  # one transaction per answer: a kill never leaves half its scores
        if progress:
            progress(i, len(todo), "scoring with the judge" if judge else "scoring")
