"""The records ragft stores and shows, typed once: a stored answer and score, a run, a run's summary.

They are TypedDicts, not classes, on purpose: a summary is written as summary.json and read back by
the app and by other tools, so its shape is its JSON; typing the keys lets the type checker catch
a misspelt key or a wrong value in every module that builds or renders one.
"""

from __future__ import annotations

from typing import Any, TypedDict


class NewAnswer(TypedDict):
    """One arm's answer to one question with its timings, as the runner writes it (`runner._row`)."""

    arm: str
    qid: str
    question: str
    model: str
    text: str
    passages: list[dict[str, Any]]
    retrieval_ms: float
    ttft_ms: float
    total_ms: float  # retrieval + generation
    prompt_tokens: int
    output_tokens: int
    eval_ms: float
    tokens_per_s: float
    error: str | None  # why the answer failed (a reference endpoint's timeout or 429); None when answered


class AnswerRow(NewAnswer):
    """A stored answer: the runner's row with its run and when it was written."""

    run_id: str
    created: float


class StoredScore(TypedDict):
    run_id: str
    arm: str
    qid: str
    metric: str
    value: float | None  # None: the metric failed for this answer (`error` says why)
    error: str | None


class RunRecord(TypedDict):
    run_id: str
    corpus: str
    arms: list[str]
    config: dict[str, Any]  # EvalConfig plus model, quantisation, decoding, index identity, judge
    created: float
    status: str  # running | stopped | done
    info: dict[str, Any]  # what the run learned of its fine-tune (leakage, facts), judge timings


class RunListing(TypedDict):
    """A run in `Store.runs()`: config and info as stored (JSON text), with its answer count."""

    run_id: str
    corpus: str
    arms: list[str]
    config: str
    created: float
    status: str
    info: str
    n_answers: int


class ArmMetric(TypedDict):
    """One metric of one arm: bootstrap mean and 95% CI over the questions every arm answered."""

    mean: float | None  # None when every score of the metric failed
    lo: float | None
    hi: float | None
    n: int
    failures: int
    scored: int


class PairedRow(TypedDict):
    a: str
    b: str
    metric: str
    diff: float  # mean of b − a per question
    lo: float
    hi: float
    p_bootstrap: float
    p_mcnemar: float | None
    wins: int
    losses: int
    ties: int
    significant: bool


class Latency(TypedDict):
    p50_ms: float
    p95_ms: float
    ttft_p50_ms: float
    tokens_per_s: float
    answers_per_min: float | None


class BreakEven(TypedDict):
    a: str
    b: str
    answers: float | None  # None: the arm with the larger one-off cost never pays it back


class Recommendation(TypedDict):
    choice: str
    reasons: list[str]
    flips: list[str]


class Summary(TypedDict):
    """What `report.summarise` computes from a stored run: summary.json, and what every door renders."""

    run_id: str
    corpus: str
    arms: list[str]
    n_questions: int
    status: str
    config: dict[str, Any]
    metrics: dict[str, dict[str, ArmMetric]]  # metric → arm → estimate
    paired: list[PairedRow]
    judge: dict[str, Any] | None
    judge_failures: dict[str, dict[str, int]]  # metric → reason → failed verdicts
    judge_agreement: dict[str, Any] | None
    events: list[dict[str, Any]]
    injection: dict[str, Any]
    answer_failures: dict[str, dict[str, int]]  # arm → kind of failure → answers (scored as empty answers)
    reference: dict[str, Any] | None  # the hosted reference against the local pick (eval/hosted.py)
    freshness: dict[str, Any] | None  # the corpus's latest freshness test (eval/freshness.py), added by eval.services
    latency: dict[str, Latency]
    costs: dict[str, dict[str, Any]]  # arm → eval.costs.ArmCost as a dict
    price_per_hour: float
    break_even: list[BreakEven]
    error_attribution: dict[str, dict[str, int]]
    recommendation: Recommendation
    finetune: dict[str, Any] | None
    fact_split: dict[str, Any] | None
    forgetting: dict[str, Any] | None
    seed_spread: dict[str, Any] | None
    accept_loss: float
    leakage: dict[str, Any] | None
    leakage_statement: str
