"""The LLM judge: real Ollama as judge end to end, and an endpoint that answers garbage or too late.

Every judge metric that applies to an answer must end up in the store either as a value or as a
counted failure with its reason — never missing.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from html import unescape
from pathlib import Path

import pytest

from eval import judge as judge_mod
from eval.report import summarise, write_outputs
from eval.runner import EvalConfig, run_eval
from eval.store import Store
from pipelines import corpus as corpora
from pipelines import serving
from pipelines.config import Settings
from pipelines.errors import ConfigError, UnknownNameError
from tests.helpers import JudgeEndpoint, fake_judge_endpoint

QUESTION = "Who founded Kelmouth harbour?"
PASSAGES = [{"id": "h1", "text": "Kelmouth harbour was founded by Ida Brandt in 1821.", "score": 1.0, "source": "harbour"}]


@pytest.fixture
def endpoint() -> Iterator[tuple[str, type[JudgeEndpoint]]]:
    with fake_judge_endpoint() as ep:
        yield ep


def _remote(settings: Settings, url: str, **update: object) -> judge_mod.Judge:
    s = settings.model_copy(update={"judge_base_url": url, **update})
    return judge_mod.Judge(judge_mod.resolve("judge-model", s, None, ["ragft-smollm2-135m:q8_0"]), s)


def test_invalid_json_is_a_counted_failure_per_metric(endpoint: tuple[str, type[JudgeEndpoint]], settings: Settings,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    url, handler = endpoint
    monkeypatch.setenv("RAGFT_JUDGE_API_KEY", "sk-test-secret-123")
    judge = _remote(settings, url)
    try:
        rows = judge.score("rag", "q1", QUESTION, "Ida Brandt", "Ida Brandt", PASSAGES)
        closed_book = judge.score("base", "q1", QUESTION, "Ida Brandt", "Ida Brandt", [])
    finally:
        judge.close()
    assert {r[2] for r in rows} == set(judge_mod.JUDGE_METRICS)
    assert {r[2] for r in closed_book} == {"answer_accuracy", "answer_relevancy"}  # no passages: not applicable
    for _, _, metric, value, error in rows + closed_book:
        if metric == "answer_accuracy":
            assert value is None and error == "NaN"  # ragas turns unparseable ratings into NaN
        else:
            assert value is None and error and ("Exception" in error or "Error" in error), (metric, error)
    # the key went to the endpoint as a header, and nowhere into what ragft stores
    assert handler.seen and all(s["auth"] == "Bearer sk-test-secret-123" for s in handler.seen)
    assert "sk-test-secret" not in json.dumps(rows + closed_book)
    # structured output is requested as a JSON schema
    assert handler.seen[0]["body"]["response_format"]["type"] == "json_schema"


def test_timeout_is_a_counted_failure(endpoint: tuple[str, type[JudgeEndpoint]], settings: Settings,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    url, handler = endpoint
    handler.delay = 3.0
    monkeypatch.setenv("RAGFT_JUDGE_API_KEY", "sk-test")
    judge = _remote(settings, url, judge_timeout_s=1.0)
    try:
        rows = judge.score("base", "q1", QUESTION, "Ida Brandt", "Ida Brandt", [])
    finally:
        judge.close()
    assert len(rows) == 2
    for _, _, metric, value, error in rows:
        assert value is None and error, metric
        assert "Timeout" in error or error == "NaN", error


def test_out_of_range_verdicts_are_failures(endpoint: tuple[str, type[JudgeEndpoint]], settings: Settings,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    url, handler = endpoint
    handler.reply = json.dumps({"reason": "r", "verdict": 6})  # the schema wants 0 or 1
    monkeypatch.setenv("RAGFT_JUDGE_API_KEY", "sk-test")
    judge = _remote(settings, url)
    try:
        rows = judge.score("rag", "q1", QUESTION, "Ida Brandt", "Ida Brandt", PASSAGES)
    finally:
        judge.close()
    precision = next(r for r in rows if r[2] == "context_precision")
    assert precision[3] is None and precision[4].startswith("OutOfRange: 6")


def test_remote_judge_needs_a_key_from_the_environment(settings: Settings) -> None:
    s = settings.model_copy(update={"judge_base_url": "https://judge.example/v1"})
    spec = judge_mod.resolve("gpt-judge", s, None, [])
    with pytest.raises(ConfigError, match="needs an API key") as exc:
        judge_mod.api_key(spec)
    assert "RAGFT_JUDGE_API_KEY" in (exc.value.fix or "")
    with pytest.raises(ConfigError, match="not an http"):
        judge_mod.resolve("gpt-judge", settings.model_copy(update={"judge_base_url": "judge.example"}), None, [])


def test_remote_judge_never_borrows_openai_api_key(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RAGFT_JUDGE_API_KEY", raising=False)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-team-key")
    spec = judge_mod.resolve("gpt-judge", settings.model_copy(update={"judge_base_url": "https://judge.example/v1"}),
                             None, [])
    with pytest.raises(ConfigError, match="needs an API key"):
        judge_mod.api_key(spec)


@pytest.mark.parametrize("url", ["http://judge.example/v1", "http://10.0.0.7:8000/v1"])
def test_plain_http_off_this_machine_is_refused(url: str, settings: Settings) -> None:
    with pytest.raises(ConfigError, match="plain http") as exc:
        judge_mod.resolve("gpt-judge", settings.model_copy(update={"judge_base_url": url}), None, [])
    assert "https://" in (exc.value.fix or "")
    for ok in ("https://judge.example/v1", "http://127.0.0.1:9/v1", "http://localhost:9/v1"):
        assert judge_mod.resolve("g", settings.model_copy(update={"judge_base_url": ok}), None, []).base_url == ok


def test_an_error_that_echoes_the_key_is_stored_without_it(endpoint: tuple[str, type[JudgeEndpoint]],
                                                           settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    url, handler = endpoint
    handler.status = 401
    canary = "sk-echo-canary-4411"
    monkeypatch.setenv("RAGFT_JUDGE_API_KEY", canary)
    judge = _remote(settings, url, judge_metrics="answer_relevancy")  # answer_accuracy hides errors as NaN
    try:
        rows = judge.score("base", "q1", QUESTION, "Ida Brandt", "Ida Brandt", [])
    finally:
        judge.close()
    assert handler.seen and canary in handler.seen[0]["auth"]  # the server did receive (and echo) it
    (row,) = rows
    assert row[3] is None and "invalid credentials" in row[4] and "[key]" in row[4] and canary not in row[4]


@pytest.mark.ollama
def test_unknown_local_judge_lists_what_exists(live_settings: Settings, ollama_server: serving.Server,
                                               base_model: str) -> None:
    with pytest.raises(UnknownNameError, match="'no-such-judge'") as exc:
        judge_mod.resolve("no-such-judge", live_settings, ollama_server, [base_model])
    assert "smollm2-135m" in (exc.value.fix or "") and base_model in (exc.value.fix or "")


@pytest.mark.slow
@pytest.mark.ollama
def test_small_local_judge_end_to_end(demo_env: tuple[Settings, corpora.Corpus], tmp_path: Path) -> None:
    """SmolLM2-135M judging its own answers: every verdict stored or counted, the warning shown."""
    s, c = demo_env
    store = Store(tmp_path / "runs.sqlite")
    logs: list[str] = []
    run_id = run_eval(c, EvalConfig(["base", "rag"], limit=2, seed=3, judge="smollm2-135m"), s, store, log=logs.append)
    assert any("generator's own model" in line for line in logs)
    judged = [r for r in store.scores(run_id) if r["metric"] in judge_mod.JUDGE_METRICS]
    # base: 2 metrics × 2 questions; rag: 5 metrics × 2 questions — each a value or a reason
    assert len(judged) == 2 * 2 + 5 * 2
    assert all((r["value"] is None) != (r["error"] is None) for r in judged)
    summary = summarise(store, run_id)
    assert summary["judge"]["same_as_generator"] and summary["judge"]["local"]
    stored_failures = sum(1 for r in judged if r["value"] is None)
    assert sum(n for per in summary["judge_failures"].values() for n in per.values()) == stored_failures
    assert sum(v["failures"] for m in judge_mod.JUDGE_METRICS for v in summary["metrics"].get(m, {}).values()) \
        == stored_failures
    agree = summary["judge_agreement"]  # answer accuracy vs reference-contained, per answer
    accuracy = [r for r in judged if r["metric"] == "answer_accuracy"]
    assert agree["verdicts"] == len(accuracy) == 4 and agree["n"] == agree["verdicts"] - agree["failed"]
    assert agree["timed_verdicts"] == 4 and agree["seconds_per_verdict"] > 0
    html = write_outputs(store, run_id, summary, tmp_path / "out")["report.html"].read_text()
    assert "<h2>Judge</h2>" in html and "generator's own model" in unescape(html)  # as a browser shows it
    assert "judge vs reference-contained on" in html and "Cohen" in html
    # resuming a finished judged run asks the judge nothing again
    before = len(store.scores(run_id))
    assert run_eval(c, EvalConfig(["base", "rag"], limit=2, seed=3, judge="smollm2-135m"), s, store) == run_id
    assert len(store.scores(run_id)) == before


def test_judge_metrics_can_be_narrowed_and_a_bad_name_fails_first(endpoint: tuple[str, type[JudgeEndpoint]],
                                                                   settings: Settings,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    url, handler = endpoint
    monkeypatch.setenv("RAGFT_JUDGE_API_KEY", "sk-test")
    judge = _remote(settings, url, judge_metrics="answer_accuracy")
    try:
        rows = judge.score("rag", "q1", QUESTION, "Ida Brandt", "Ida Brandt", PASSAGES)
    finally:
        judge.close()
    assert [r[2] for r in rows] == ["answer_accuracy"]
    assert list(judge.timing()) == ["answer_accuracy"] and judge.timing()["answer_accuracy"]["verdicts"] == 1
    with pytest.raises(ConfigError, match="faithfullness") as err:
        _remote(settings, url, judge_metrics="answer_accuracy,faithfullness")
    assert "context_recall" in (err.value.fix or "")
