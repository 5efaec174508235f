"""LLM-judge metrics (ragas collections API) through an OpenAI-compatible endpoint.

The judge is either a model on ragft's own Ollama server (its /v1 endpoint) or any other
OpenAI-compatible endpoint (`judge_base_url`), with its key read from the environment only —
never from a flag, a file or the database. Requests ask for JSON-schema structured output
(instructor's JSON_SCHEMA mode), which Ollama turns into a grammar, so even a small model
returns parseable JSON; what it puts in that JSON can still be useless, and every failure
(parse error, timeout, NaN) is stored per metric with its reason.
"""

from __future__ import annotations

import asyncio
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from eval.store import ScoreRow
from pipelines import models
from pipelines.config import Settings
from pipelines.endpoints import check_endpoint, scrub
from pipelines.errors import ConfigError, UnknownNameError

# Metric name → the answer fields it reads. The context metrics need retrieved passages, so
# they apply to the rag arms only (closed-book arms have none: not applicable, not failed).
JUDGE_METRICS = ("answer_accuracy", "answer_relevancy", "faithfulness", "context_precision", "context_recall")
NEEDS_CONTEXT = frozenset({"faithfulness", "context_precision", "context_recall"})
# Only ragft's own variable: a team's OPENAI_API_KEY is never sent to whatever endpoint a judge URL names.
KEY_ENV = "RAGFT_JUDGE_API_KEY"
# What a sound verdict can add up to. ragas averages whatever verdicts the judge returns, so a
# judge that answers "6" where the schema wants 0/1 would report a precision of 6; such a score
# is a failed verdict, not a number. Answer relevancy is a cosine and may dip below zero.
VALID_RANGE = {"answer_relevancy": (-1.0, 1.0)}


@dataclass(frozen=True)
class JudgeSpec:
    model: str  # the name the endpoint knows
    base_url: str  # OpenAI-compatible, ending in /v1
    local: bool  # served by ragft's own Ollama
    same_as_generator: bool  # judge weights = generator weights (self-preference risk)

    def describe(self) -> dict[str, Any]:
        """What a report may show: no key, ever."""
        return {"model": self.model, "endpoint": self.base_url, "local": self.local,
                "same_as_generator": self.same_as_generator, "warning": self.warning}

    @property
    def warning(self) -> str | None:
        if not self.same_as_generator:
            return None
        return (f"the judge '{self.model}' is the generator's own model: it may favour its own answers, and a "
                "model this small judges poorly — use a larger judge for numbers you act on")


def api_key(spec: JudgeSpec) -> str:
    """The key for a remote judge, from the environment only."""
    if spec.local:
        return "ollama"  # Ollama ignores the key; the client library insists on one
    if os.environ.get(KEY_ENV):
        return os.environ[KEY_ENV]
    raise ConfigError(f"the judge endpoint {spec.base_url} needs an API key",
                      f"export {KEY_ENV} in the environment; ragft never stores it")


def resolve(judge: str, settings: Settings, server: Any, generator_models: Sequence[str],
            log: Any = print) -> JudgeSpec:
    """Turn `--judge NAME` into an endpoint and model; prepares a registry model on ragft's Ollama."""
    selected_metrics(settings)  # a bad metric list fails before any answer is generated
    if settings.judge_base_url:
        url = check_endpoint(settings.judge_base_url, "judge_base_url")
        return JudgeSpec(judge, url, False, judge in generator_models)
    from pipelines import generation

    if judge in models.known_models(settings) and judge != "custom":
        name = models.ensure_served(models.get_spec(judge, settings), settings, server, log)
    else:
        served = generation.served_models(server, settings)
        if judge not in served and f"{judge}:latest" not in served:
            raise UnknownNameError(
                f"judge model '{judge}' is neither a ragft model nor on the Ollama server at {server.url}",
                f"use one of: {', '.join(sorted(set(models.known_models()) - {'custom'}) + sorted(served))}; "
                "or set RAGFT_JUDGE_BASE_URL for an OpenAI-compatible endpoint")
        name = judge
    return JudgeSpec(name, f"{server.url}/v1", True, name in generator_models)


class Judge:
    """The ragas judge metrics on one event loop (the async HTTP client is bound to its loop)."""

    def __init__(self, spec: JudgeSpec, settings: Settings) -> None:
        import instructor
        from openai import AsyncOpenAI
        from ragas.llms.base import InstructorLLM, InstructorModelArgs
        from ragas.metrics.collections import (
            AnswerAccuracy,
            AnswerRelevancy,
            ContextPrecisionWithReference,
            ContextRecall,
            Faithfulness,
        )

        from pipelines import embeddings

        self.spec = spec
        self.timeout_s = settings.judge_timeout_s
        self._loop = asyncio.Runner()
        # Retries are ours to count, not the client's to hide: one attempt per request.
        key = api_key(spec)
        self._key = "" if spec.local else key  # what error texts must not carry
        client = AsyncOpenAI(base_url=spec.base_url, api_key=key, timeout=settings.judge_timeout_s,
                             max_retries=0)
        client.chat.completions.create = _with_json_schema(client.chat.completions.create)  # type: ignore[method-assign]
        llm = InstructorLLM(client=instructor.from_openai(client, mode=instructor.Mode.JSON_SCHEMA), model=spec.model,
                            provider="openai", model_args=InstructorModelArgs(
                                temperature=0.0, top_p=1.0, max_tokens=settings.judge_max_tokens),
                            seed=settings.seed)
        metrics: dict[str, Any] = {
            "answer_accuracy": AnswerAccuracy(llm=llm, max_retries=1),
            "answer_relevancy": AnswerRelevancy(llm=llm, embeddings=embeddings.ragas_embedding()),
            "faithfulness": Faithfulness(llm=llm),
            "context_precision": ContextPrecisionWithReference(llm=llm, name="context_precision"),
            "context_recall": ContextRecall(llm=llm),
        }
        self.metrics = {name: metrics[name] for name in selected_metrics(settings)}
        self.seconds: dict[str, list[float]] = {name: [] for name in self.metrics}  # wall time per verdict

    def close(self) -> None:
        self._loop.close()

    def score(self, arm: str, qid: str, question: str, text: str, reference: str,
              passages: Sequence[dict[str, Any]]) -> list[ScoreRow]:
        contexts = [str(p.get("text", "")) for p in passages]
        rows: list[ScoreRow] = []
        for name, metric in self.metrics.items():
            if name in NEEDS_CONTEXT and not contexts:
                continue
            inputs = _inputs(name, question, text, reference, contexts)
            started = time.perf_counter()
            try:
                result = self._loop.run(asyncio.wait_for(metric.ascore(**inputs), self.timeout_s))
                value = result.value
                lo, hi = VALID_RANGE.get(name, (0.0, 1.0))
                if value is None or (isinstance(value, float) and math.isnan(value)):
                    rows.append((arm, qid, name, None, "NaN"))
                elif not lo - 1e-6 <= float(value) <= hi + 1e-6:
                    rows.append((arm, qid, name, None, f"OutOfRange: {float(value):.3g} is outside [{lo:g}, {hi:g}] "
                                                       "(the judge's verdicts did not follow the scale)"))
                else:
                    rows.append((arm, qid, name, float(value), None))
            except TimeoutError:
                rows.append((arm, qid, name, None, f"TimeoutError: no verdict within {self.timeout_s:.0f} s"))
            except Exception as exc:  # parse errors, HTTP errors, validation: recorded with the reason
                rows.append((arm, qid, name, None, scrub(f"{type(exc).__name__}: {exc}", self._key)[:300]))
            self.seconds[name].append(time.perf_counter() - started)
        return rows

    def timing(self) -> dict[str, dict[str, float]]:
        """Verdicts given in this process and their mean wall time, per metric."""
        return {m: {"verdicts": len(v), "seconds_per_verdict": round(sum(v) / len(v), 2)}
                for m, v in self.seconds.items() if v}


def selected_metrics(settings: Settings) -> list[str]:
    """The judge metrics to compute (`judge_metrics`, comma-separated, or "all"); each costs judge calls."""
    if settings.judge_metrics.strip() == "all":
        return list(JUDGE_METRICS)
    chosen = [m.strip() for m in settings.judge_metrics.split(",") if m.strip()]
    unknown = [m for m in chosen if m not in JUDGE_METRICS]
    if unknown or not chosen:
        raise ConfigError(f"judge metric(s) {', '.join(unknown) or '(none)'} unknown",
                          f"set RAGFT_JUDGE_METRICS to 'all' or a comma-separated list of: {', '.join(JUDGE_METRICS)}")
    return chosen


def _with_json_schema(create: Any) -> Any:
    """Ask for the schema the OpenAI way (`json_schema`), which Ollama enforces as a grammar.

    The pinned instructor sends its JSON_SCHEMA mode as `{"type": "json_object", "schema": …}`;
    Ollama (and OpenAI) read that as "any JSON", and a small model then echoes the schema
    instead of filling it in. The same schema under `json_schema` constrains the tokens.
    """

    async def create_with_schema(*args: Any, **kwargs: Any) -> Any:
        fmt = kwargs.get("response_format")
        if isinstance(fmt, dict) and fmt.get("type") == "json_object" and "schema" in fmt:
            kwargs["response_format"] = {"type": "json_schema",
                                         "json_schema": {"name": "verdict", "schema": fmt["schema"]}}
        return await create(*args, **kwargs)

    return create_with_schema


def _inputs(name: str, question: str, text: str, reference: str, contexts: list[str]) -> dict[str, Any]:
    inputs: dict[str, dict[str, Any]] = {
        "answer_accuracy": {"user_input": question, "response": text, "reference": reference},
        "answer_relevancy": {"user_input": question, "response": text},
        "faithfulness": {"user_input": question, "response": text, "retrieved_contexts": contexts},
        "context_precision": {"user_input": question, "reference": reference, "retrieved_contexts": contexts},
        "context_recall": {"user_input": question, "retrieved_contexts": contexts, "reference": reference},
    }
    return inputs[name]
