"""The reference arms: a hosted model behind any OpenAI-compatible endpoint, priced per token.

`api` asks closed book, `api_rag` with the rag arm's prompt and the same retrieved passages; both
use the shared decoding settings (temperature, seed, max tokens) and are timed by the same clock
as the local arms (request sent → first token → last token). The endpoint follows the judge's
rules: https off this machine, the key from RAGFT_REFERENCE_API_KEY only, never stored.

A hosted endpoint fails in ways a local server does not; each failure is counted, never hidden:
- 401/403 (the key) and 404 (the model name) stop the run: every further answer would fail alike;
  what is stored stays, and the run resumes once the setting is fixed.
- 429: wait what Retry-After asks (at most `reference_max_wait_s`), up to `reference_retries`
  times; each wait is an event of the run; after the last one the answer is stored as failed.
- a timeout, a dropped connection or a 5xx: the answer is stored as failed, with its reason.
A failed answer is scored as the empty answer a user would have got; reports count failures per
arm, and a resumed run asks the failed questions again.
"""

from __future__ import annotations

import email.utils
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pipelines.config import Settings
from pipelines.endpoints import check_endpoint, on_this_machine, scrub
from pipelines.errors import ConfigError, RagftError
from pipelines.generation import Generation

KEY_ENV = "RAGFT_REFERENCE_API_KEY"
SETTING_ENV = {"reference_base_url": "RAGFT_REFERENCE_BASE_URL", "reference_model": "RAGFT_REFERENCE_MODEL",
               "reference_input_price": "RAGFT_REFERENCE_INPUT_PRICE",
               "reference_output_price": "RAGFT_REFERENCE_OUTPUT_PRICE",
               "reference_prices_date": "RAGFT_REFERENCE_PRICES_DATE"}


class ReferenceUnavailable(RagftError):
    """The reference endpoint refused the run as a whole (key, model name, unreachable)."""


@dataclass(frozen=True)
class ReferenceSpec:
    model: str
    base_url: str
    input_price: float  # per 1M prompt tokens, in the currency of price_per_hour
    output_price: float  # per 1M output tokens
    prices_date: str

    def describe(self) -> dict[str, Any]:
        """What a run stores and a report shows: no key, ever."""
        return {"model": self.model, "endpoint": self.base_url, "input_price_per_1m": self.input_price,
                "output_price_per_1m": self.output_price, "prices_date": self.prices_date}

    def cost(self, prompt_tokens: int, output_tokens: int) -> float:
        return (prompt_tokens * self.input_price + output_tokens * self.output_price) / 1e6


def resolve(settings: Settings) -> ReferenceSpec:
    """The configured endpoint, model and prices; anything missing fails before a question is asked."""
    missing = [SETTING_ENV[k] for k in SETTING_ENV if getattr(settings, k) in (None, "")]
    if missing:
        raise ConfigError(f"the reference arms need {', '.join(missing)}",
                          "set the endpoint (an OpenAI-compatible base URL ending in /v1), the model it serves, "
                          "its prices per 1M input and output tokens and the date you read them, e.g. "
                          "RAGFT_REFERENCE_INPUT_PRICE=0.15 RAGFT_REFERENCE_OUTPUT_PRICE=0.60 "
                          "RAGFT_REFERENCE_PRICES_DATE=2026-12-01; the key goes in " + KEY_ENV)
    assert settings.reference_base_url and settings.reference_model  # checked above (for the type checker)
    return ReferenceSpec(settings.reference_model, check_endpoint(settings.reference_base_url, "RAGFT_REFERENCE_BASE_URL"),
                         float(settings.reference_input_price or 0), float(settings.reference_output_price or 0),
                         str(settings.reference_prices_date))


def api_key(spec: ReferenceSpec) -> str:
    if os.environ.get(KEY_ENV):
        return os.environ[KEY_ENV]
    if on_this_machine(spec.base_url):
        return "none"  # a server on this machine may need no key; the client library insists on one
    raise ConfigError(f"the reference endpoint {spec.base_url} needs an API key",
                      f"export {KEY_ENV} in the environment; ragft never stores it")


@dataclass
class Completion:
    """One reference answer: its generation (timed here), or why it failed, and the 429 waits it took."""

    generation: Generation
    error: str | None
    waits: list[str]
    usage_reported: bool


def retry_after_s(headers: Any, attempt: int, cap: float) -> float:
    """Seconds a 429 asks to wait (Retry-After as seconds or an HTTP date); without one, 1, 2, 4 … s."""
    value = (headers or {}).get("retry-after") if headers is not None else None
    wait = float(2 ** attempt)
    if value:
        try:
            wait = float(value)
        except ValueError:
            when = email.utils.parsedate_to_datetime(value) if value else None
            if when is not None:
                wait = when.timestamp() - time.time()
    return max(0.0, min(cap, wait))


class ReferenceClient:
    """Streams chat completions from the reference endpoint, one attempt per request (the waits are ours to count)."""

    def __init__(self, spec: ReferenceSpec, settings: Settings, sleep: Callable[[float], None] = time.sleep) -> None:
        from openai import OpenAI

        self.spec, self.settings, self._sleep = spec, settings, sleep
        self._key = api_key(spec)
        self._client = OpenAI(base_url=spec.base_url, api_key=self._key, timeout=settings.reference_timeout_s,
                              max_retries=0)

    def complete(self, prompt: str, system: str, on_token: Callable[[str], None] | None = None) -> Completion:
        import openai

        waits: list[str] = []
        attempt = 0
        started = time.perf_counter()
        while True:
            try:
                gen, usage = self._stream(prompt, system, on_token)
                return Completion(gen, None, waits, usage)
            except (openai.AuthenticationError, openai.PermissionDeniedError) as exc:
                raise ReferenceUnavailable(
                    f"the reference endpoint {self.spec.base_url} refused the key ({exc.status_code}): "
                    f"{self._text(exc)}", f"export a valid key in {KEY_ENV}, then run the same command again "
                    "(stored answers are kept)") from None
            except openai.NotFoundError as exc:
                raise ReferenceUnavailable(
                    f"the reference endpoint {self.spec.base_url} does not know model '{self.spec.model}' (404): "
                    f"{self._text(exc)}", "set RAGFT_REFERENCE_MODEL to a model that endpoint serves") from None
            except openai.RateLimitError as exc:
                if attempt >= self.settings.reference_retries:
                    return self._failed(started, f"rate limited (429) after {attempt + 1} attempts", waits)
                wait = retry_after_s(exc.response.headers, attempt, self.settings.reference_max_wait_s)
                attempt += 1
                waits.append(f"rate limited (429): waited {wait:.1f} s (Retry-After "
                             f"{exc.response.headers.get('retry-after') or 'not given'}), attempt {attempt + 1}")
                self._sleep(wait)
            except openai.APITimeoutError:
                return self._failed(started, f"timed out after {self.settings.reference_timeout_s:g} s", waits)
            except openai.APIConnectionError as exc:
                if attempt == 0 and not waits and self._unreachable(exc):
                    raise ReferenceUnavailable(f"the reference endpoint {self.spec.base_url} is not reachable: {exc}",
                                               "check RAGFT_REFERENCE_BASE_URL and that the server runs") from None
                return self._failed(started, f"connection failed: {self._text(exc)}", waits)
            except openai.APIStatusError as exc:
                return self._failed(started, f"HTTP {exc.status_code}: {self._text(exc)}", waits)
            except openai.APIError as exc:  # e.g. an error event in the middle of the stream
                return self._failed(started, f"endpoint error: {self._text(exc)}", waits)

    def _stream(self, prompt: str, system: str, on_token: Callable[[str], None] | None) -> tuple[Generation, bool]:
        s = self.settings
        sent = time.perf_counter()
        stream = self._client.chat.completions.create(
            model=self.spec.model, messages=[{"role": "system", "content": system}, {"role": "user", "content": prompt}],
            temperature=s.temperature, seed=s.seed, max_tokens=s.max_tokens, stream=True,
            stream_options={"include_usage": True})
        parts: list[str] = []
        ttft: float | None = None
        usage: Any = None
        finish: str | None = None
        for chunk in stream:
            usage = chunk.usage or usage
            for choice in chunk.choices:
                piece = choice.delta.content or ""
                if piece:
                    if ttft is None:
                        ttft = (time.perf_counter() - sent) * 1000
                    parts.append(piece)
                    if on_token:
                        on_token(piece)
                finish = choice.finish_reason or finish
        total = (time.perf_counter() - sent) * 1000
        first = ttft if ttft is not None else total
        return Generation(text="".join(parts), model=self.spec.model, ttft_ms=first, total_ms=total, load_ms=0.0,
                          prompt_tokens=int(getattr(usage, "prompt_tokens", 0) or 0), prompt_ms=first,
                          output_tokens=int(getattr(usage, "completion_tokens", 0) or 0), eval_ms=total - first,
                          done_reason=finish), usage is not None

    def _failed(self, started: float, reason: str, waits: list[str]) -> Completion:
        total = (time.perf_counter() - started) * 1000
        return Completion(Generation("", self.spec.model, total, total, 0.0, 0, 0.0, 0, 0.0, "error"), reason, waits, False)

    def _text(self, exc: Exception) -> str:
        """An endpoint's error text without the key (a server may echo the request's headers)."""
        body = getattr(exc, "body", None)
        message = body.get("message") if isinstance(body, dict) else None
        return scrub(str(message or exc), self._key)[:300]

    @staticmethod
    def _unreachable(exc: Exception) -> bool:
        import httpx

        return isinstance(exc.__cause__, httpx.ConnectError)
