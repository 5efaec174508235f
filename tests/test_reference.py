"""The hosted reference arms against a real OpenAI-compatible server: ragft's own Ollama /v1 serving
another model (Qwen2.5-Coder-0.5B) behind a loopback gateway that checks a key, rate-limits and stalls
as hosted endpoints do. Every failure is counted in the store and the report, never hidden."""

from __future__ import annotations

from collections.abc import Iterator
from html import unescape
from pathlib import Path

import pytest

from eval import hosted
from eval.report import summarise, write_outputs
from eval.runner import EvalConfig, run_eval
from eval.store import Store
from pipelines import corpus as corpora
from pipelines import models, reference, serving
from pipelines.arms import LOCAL_ARMS, Missing, kind
from pipelines.config import Settings
from pipelines.errors import ConfigError
from tests.helpers import Gateway, gateway

REFERENCE = "qwen2.5-coder-0.5b"
PRICES = {"reference_input_price": 0.15, "reference_output_price": 0.60, "reference_prices_date": "2026-12-01"}


def _configured(s: Settings, url: str, **update: object) -> Settings:
    return s.model_copy(update={"reference_base_url": url, **PRICES, **update})


def test_reference_settings_are_all_named_before_any_answer(settings: Settings) -> None:
    with pytest.raises(ConfigError, match="RAGFT_REFERENCE_BASE_URL.*RAGFT_REFERENCE_MODEL.*RAGFT_REFERENCE_PRICES_DATE"):
        reference.resolve(settings)
    r = kind("api_rag").ready(settings, corpora.load("port-vellmar", settings))
    assert isinstance(r, Missing) and r.step == "reference" and "RAGFT_REFERENCE_INPUT_PRICE" in r.what
    assert set(LOCAL_ARMS) == {"base", "rag", "ft", "ft_rag"}  # the reference arms are never a default


@pytest.mark.parametrize("url", ["http://api.example/v1", "http://10.0.0.7:8000/v1"])
def test_plain_http_off_this_machine_is_refused(url: str, settings: Settings) -> None:
    with pytest.raises(ConfigError, match="plain http"):
        reference.resolve(_configured(settings, url, reference_model="m"))


def test_a_remote_reference_needs_its_own_key(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-team-key")  # never borrowed
    spec = reference.resolve(_configured(settings, "https://api.example/v1", reference_model="m"))
    with pytest.raises(ConfigError, match="RAGFT_REFERENCE_API_KEY"):
        reference.api_key(spec)
    assert spec.describe()["endpoint"] == "https://api.example/v1" and "key" not in str(spec.describe())


def test_retry_after_is_read_as_seconds_or_a_date_and_capped() -> None:
    assert reference.retry_after_s({"retry-after": "2"}, 0, 60) == 2.0
    assert reference.retry_after_s({"retry-after": "3600"}, 0, 30) == 30.0
    assert reference.retry_after_s({}, 2, 60) == 4.0  # none given: 1, 2, 4 … s
    assert reference.retry_after_s({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}, 0, 60) == 0.0  # in the past


def test_hosted_cost_is_priced_per_reported_token() -> None:
    rows = [{"arm": "api", "total_ms": 200.0, "ttft_ms": 50.0, "prompt_tokens": 1000, "output_tokens": 100,
             "tokens_per_s": 10.0, "error": None},
            {"arm": "api", "total_ms": 9000.0, "ttft_ms": 9000.0, "prompt_tokens": 0, "output_tokens": 0,
             "tokens_per_s": 0.0, "error": "timed out after 9 s"}]
    c = hosted.hosted_cost("api", rows, {"input_price_per_1m": 0.15, "output_price_per_1m": 0.60})  # type: ignore[arg-type]
    assert c.per_1k_answers == pytest.approx(1000 * (1000 * 0.15 + 100 * 0.60) / 1e6) and c.pricing == "per token"
    assert c.latency_p50_ms == 200.0  # the failed answer's wait is not a latency
    assert hosted.answer_failures(rows) == {"api": {"timed out after 9 s": 1}}  # type: ignore[arg-type]


def test_a_database_from_before_failed_answers_gets_the_error_column(tmp_path: Path) -> None:
    import sqlite3

    from eval import store as store_mod
    from tests.helpers import answer

    old = tmp_path / "runs.sqlite"
    db = sqlite3.connect(old)
    db.executescript(store_mod.SCHEMA.replace("  error TEXT, PRIMARY KEY (run_id, arm, qid)", "  PRIMARY KEY (run_id, arm, qid)"))
    db.close()
    store = Store(old)
    store.ensure_run("r", "c", ["api"], {})
    failed = {**answer("api", "q1", ""), "error": "timed out after 1 s"}
    assert store.save_answer("r", failed) and store.answered("r", "api") == set()  # asked again on resume
    store.save_scores("r", [("api", "q1", "contains", 0.0, None)])
    assert store.save_answer("r", answer("api", "q1", "Ida Brandt"))  # the new attempt replaces the failure …
    assert store.answered("r", "api") == {"q1"} and store.scores("r") == []  # … and its scores go with it
    assert not store.save_answer("r", answer("api", "q1", "again"))  # an answer that arrived is never replaced


@pytest.fixture(scope="module")
def reference_model(live_settings: Settings, ollama_server: serving.Server) -> str:
    """Another model on the session's Ollama: the hosted model's stand-in."""
    return models.ensure_served(models.get_spec(REFERENCE, live_settings), live_settings, ollama_server, print)


@pytest.fixture
def front(ollama_server: serving.Server, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, type[Gateway]]]:
    with gateway(ollama_server.url) as (url, handler):
        monkeypatch.setenv(reference.KEY_ENV, handler.key)
        yield url, handler


@pytest.mark.ollama
def test_reference_arm_answers_priced_beside_the_local_arms(demo_env: tuple[Settings, corpora.Corpus], reference_model: str,
                                                           front: tuple[str, type[Gateway]], tmp_path: Path) -> None:
    s0, c = demo_env
    url, handler = front
    s = _configured(s0, url, reference_model=reference_model)
    handler.rate_limit, handler.retry_after = 1, "1"  # the first request is told to wait a second
    store = Store(tmp_path / "runs.sqlite")
    run_id = run_eval(c, EvalConfig(["base", "rag", "api_rag"], limit=3, seed=5), s, store, log=print)
    rows = [a for a in store.answers(run_id) if a["arm"] == "api_rag"]
    assert len(rows) == 3 and all(r["error"] is None and r["model"] == reference_model for r in rows)
    assert all(r["prompt_tokens"] > 0 and r["output_tokens"] > 0 and r["passages"] for r in rows)
    rag_rows = {a["qid"]: a for a in store.answers(run_id) if a["arm"] == "rag"}
    assert all([p["id"] for p in r["passages"]] == [p["id"] for p in rag_rows[r["qid"]]["passages"]] for r in rows)
    waited = [e for e in store.events(run_id) if e["kind"] == "rate_limited"]
    assert len(waited) == 1 and "Retry-After 1" in waited[0]["detail"]
    assert handler.seen[1]["at"] - handler.seen[0]["at"] >= 1.0  # the wait was real
    summary = summarise(store, run_id)
    expected = 1000 * sum((r["prompt_tokens"] * 0.15 + r["output_tokens"] * 0.60) / 1e6 for r in rows) / 3
    assert summary["costs"]["api_rag"]["per_1k_answers"] == pytest.approx(expected)
    assert summary["recommendation"]["choice"] != "hosted"  # ragft recommends among the local arms
    ref = summary["reference"]
    assert ref and ref["hosted"] == "api_rag" and ref["local"] in ("base", "rag") and ref["rate_limited"] == 1
    assert any(r.startswith(f"hosted reference {reference_model}") for r in summary["recommendation"]["reasons"])
    html = unescape(write_outputs(store, run_id, summary, tmp_path / "out")["report.html"].read_text())
    assert "Hosted reference" in html and "as of 2026-12-01" in html and "0.15 per 1M input tokens" in html
    assert handler.key not in html and handler.key not in str(store.run(run_id)["config"])


@pytest.mark.ollama
def test_timeouts_and_exhausted_rate_limits_are_counted_and_asked_again(
        demo_env: tuple[Settings, corpora.Corpus], reference_model: str, front: tuple[str, type[Gateway]],
        tmp_path: Path) -> None:
    s0, c = demo_env
    url, handler = front
    s = _configured(s0, url, reference_model=reference_model, reference_timeout_s=1.0, reference_retries=1,
                    reference_max_wait_s=0.1)
    store = Store(tmp_path / "runs.sqlite")
    handler.rate_limit = 2  # the first question: 429, wait, 429 again → failed
    handler.delay = 0.0
    cfg = EvalConfig(["api"], limit=2, seed=5)
    original = Gateway.do_POST

    def stall_second(self: Gateway) -> None:  # the second question: held past the timeout
        type(self).delay = 3.0 if type(self).rate_limit == 0 and len(type(self).seen) == 2 else 0.0
        original(self)

    handler.do_POST = stall_second  # type: ignore[method-assign]
    run_id = run_eval(c, cfg, s, store, log=print)
    failed = {a["qid"]: a["error"] for a in store.answers(run_id) if a["error"]}
    assert sorted(failed.values(), key=str) == ["rate limited (429) after 2 attempts", "timed out after 1 s"]
    summary = summarise(store, run_id)
    assert summary["answer_failures"] == {"api": {"rate limited (429) after 2 attempts": 1, "timed out after 1 s": 1}}
    assert summary["metrics"]["contains"]["api"]["mean"] == 0.0  # scored as the empty answers a user got
    kinds = [e["kind"] for e in store.events(run_id)]
    assert kinds.count("answer_failed") == 2 and kinds.count("rate_limited") == 1
    # the same run again asks exactly the failed questions, and their new answers replace the failures
    handler.do_POST = original  # type: ignore[method-assign]
    handler.delay, handler.rate_limit = 0.0, 0
    asked = len(handler.seen)
    # Real answers now: the 1 s limit was for the stalled request only — a 0.5B model loading on a
    # busy CPU can take longer than that, and the run id does not depend on the limit.
    patient = s.model_copy(update={"reference_timeout_s": 300.0})
    assert run_eval(c, cfg, patient, store, log=print) == run_id
    assert len(handler.seen) - asked == 2
    assert not [a for a in store.answers(run_id) if a["error"]] and summarise(store, run_id)["answer_failures"] == {}


@pytest.mark.ollama
def test_a_refused_key_stops_the_run_and_is_never_stored(demo_env: tuple[Settings, corpora.Corpus],
                                                         reference_model: str, front: tuple[str, type[Gateway]],
                                                         tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s0, c = demo_env
    url, handler = front
    monkeypatch.setenv(reference.KEY_ENV, "sk-wrong-key-123456")
    s = _configured(s0, url, reference_model=reference_model)
    store = Store(tmp_path / "runs.sqlite")
    with pytest.raises(reference.ReferenceUnavailable, match="refused the key \\(401\\)") as exc:
        run_eval(c, EvalConfig(["base", "api"], limit=2, seed=5), s, store, log=print)
    assert "RAGFT_REFERENCE_API_KEY" in (exc.value.fix or "") and "sk-wrong-key-123456" not in str(exc.value)
    (run,) = store.runs()
    assert run["status"] == "stopped" and not [a for a in store.answers(run["run_id"]) if a["arm"] == "api"]
    stopped = [e for e in store.events(run["run_id"]) if e["kind"] == "stopped"]
    assert stopped and "sk-wrong-key-123456" not in stopped[0]["detail"]
    assert len([a for a in store.answers(run["run_id"]) if a["arm"] == "base"]) == 2  # what was answered stays
