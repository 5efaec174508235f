"""Requests to the Ollama server: the models it holds, and answers streamed with their timings.

All arms go through `generate`, with the one set of decoding options from the settings; a
server ragft owns that dies mid-request is restarted once and the restart is recorded.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import ollama
import tenacity

from pipelines.config import Settings
from pipelines.errors import ConfigError, ModelPrepError, OllamaUnavailable
from pipelines.ollama_build import ensure_binary
from pipelines.serving import Server, ensure_server


def client(server: Server, settings: Settings) -> ollama.Client:
    return ollama.Client(host=server.url, timeout=settings.request_timeout_s)


def served_models(server: Server, settings: Settings) -> dict[str, int]:
    """Model name → size in bytes for every model the server has."""
    return {m.model: int(m.size or 0) for m in client(server, settings).list().models if m.model}


def has_model(server: Server, settings: Settings, name: str) -> bool:
    names = served_models(server, settings)
    return name in names or f"{name}:latest" in names


def create_model(server: Server, settings: Settings, name: str, modelfile: str, quantize: str | None) -> None:
    """`ollama create` through the CLI, which uploads local weight directories as blobs."""
    binary = ensure_binary(settings)
    with tempfile.TemporaryDirectory(prefix="ragft-modelfile-") as tmp:
        mf = Path(tmp) / "Modelfile"
        mf.write_text(modelfile, encoding="utf-8")
        cmd = [str(binary.path), "create", name, "-f", str(mf)]
        if quantize and quantize != "f16":
            cmd += ["--quantize", quantize]
        env = dict(os.environ, OLLAMA_HOST=server.url.removeprefix("http://"))
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr + proc.stdout).strip().splitlines()[-8:])
        raise ModelPrepError(f"`ollama create {name}` failed:\n{tail}", "run `ragft doctor` and retry `ragft setup`")


def delete_model(server: Server, settings: Settings, name: str) -> None:
    client(server, settings).delete(name)


# ---------------------------------------------------------------- generation


@dataclass
class Generation:
    """One answer from Ollama with the timings it reported (durations in ms)."""

    text: str
    model: str
    ttft_ms: float  # measured here: request sent → first non-empty token received
    total_ms: float  # measured here: request sent → last chunk received
    load_ms: float
    prompt_tokens: int
    prompt_ms: float
    output_tokens: int
    eval_ms: float
    done_reason: str | None

    @property
    def tokens_per_s(self) -> float:
        return self.output_tokens / (self.eval_ms / 1000) if self.eval_ms > 0 else 0.0

    @property
    def prompt_tokens_per_s(self) -> float:
        return self.prompt_tokens / (self.prompt_ms / 1000) if self.prompt_ms > 0 else 0.0


def _stream(server: Server, settings: Settings, model: str, prompt: str, system: str | None) -> Iterator[ollama.GenerateResponse]:
    return client(server, settings).generate(
        model=model, prompt=prompt, system=system or "", stream=True,
        options=settings.decoding_options(), keep_alive="30m",
    )


def generate(
    server: Server,
    settings: Settings,
    model: str,
    prompt: str,
    system: str | None = None,
    on_token: Callable[[str], None] | None = None,
) -> Generation:
    """Stream one completion with the shared decoding options; restart a dead owned server once."""
    def bring_back(state: tenacity.RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        restart(server, settings, f"{type(exc).__name__} while generating with {model}")

    try:
        for attempt in tenacity.Retrying(stop=tenacity.stop_after_attempt(2 if server.owned else 1),
                                         retry=tenacity.retry_if_exception_type(_GONE), before_sleep=bring_back,
                                         reraise=True):
            with attempt:
                return _generate_once(server, settings, model, prompt, system, on_token)
    except _GONE as exc:
        raise OllamaUnavailable(f"Ollama at {server.url} is not answering: {exc}", "run `ragft doctor`") from exc
    except ollama.ResponseError as exc:
        if exc.status_code == 404:
            raise ModelPrepError(f"model '{model}' is not on the server", "run `ragft setup`") from exc
        raise OllamaUnavailable(f"Ollama refused the request: {exc.error}") from exc
    raise AssertionError("unreachable: tenacity returns or re-raises")


# What a server that died or restarted looks like to a client mid-request.
_GONE = (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError, ConnectionError)


_restart_lock = threading.Lock()


def restart(server: Server, settings: Settings, reason: str) -> None:
    """Bring a dead owned server back (once, however many threads noticed) and point `server` at it."""
    with _restart_lock:
        old = server.url
        fresh = ensure_server(settings)  # a healthy server (another thread's restart) is reused
        if fresh.url != old or fresh.pid != server.pid:
            server.restarts.append(f"Ollama at {old} stopped answering ({reason}); now {fresh.url} (pid {fresh.pid})")
        server.url, server.pid = fresh.url, fresh.pid


def forget_prompt(server: Server, settings: Settings, model: str) -> None:
    """Leave the model's prompt cache holding nothing a real prompt starts with.

    Ollama 0.11.4 always reuses the longest cached prefix of the previous request, and a prompt
    evaluated in two batches (cached prefix + rest) gets logits that differ in the last bits
    from one evaluated in one batch: at temperature 0 a long answer then diverges, so an answer
    would depend on the request before it (a resumed run would not equal an uninterrupted one).
    One raw newline, one token, with the same options (no model reload), costs a few tens of ms
    and happens before the timed request.
    """
    client(server, settings).generate(model=model, prompt="\n", raw=True, keep_alive="30m",
                                      options={**settings.decoding_options(), "num_predict": 1})


REPEAT_ABORT = "repeat-limit"  # done_reason of an answer Ollama cut for repeating one token
_REPEAT_LIMIT = 30  # Ollama 0.11.4 aborts once a token repeats more than this many times


def repeat_aborted(parts: list[str]) -> bool:
    """The streamed pieces end in the run of identical tokens that makes Ollama abort a prediction."""
    tail = [p.strip() for p in parts[-(_REPEAT_LIMIT + 1):]]
    return len(tail) == _REPEAT_LIMIT + 1 and len(set(tail)) == 1


def _generate_once(server: Server, settings: Settings, model: str, prompt: str, system: str | None,
                   on_token: Callable[[str], None] | None) -> Generation:
    if not settings.prompt_cache:
        forget_prompt(server, settings, model)
    started = time.perf_counter()
    ttft: float | None = None
    parts: list[str] = []
    final: ollama.GenerateResponse | None = None
    for chunk in _stream(server, settings, model, prompt, system):
        if chunk.response:
            if ttft is None:
                ttft = (time.perf_counter() - started) * 1000
            parts.append(chunk.response)
            if on_token:
                on_token(chunk.response)
        if chunk.done:
            final = chunk
    total = (time.perf_counter() - started) * 1000
    if final is None and repeat_aborted(parts):
        # Ollama 0.11.4 (llm/server.go) ends a prediction after 31 identical tokens and closes the
        # stream with no final chunk, so no token counts or timings: the answer is what it sent,
        # timed by our clock, with one token per streamed chunk.
        first = ttft if ttft is not None else total
        return Generation(text="".join(parts), model=model, ttft_ms=first, total_ms=total, load_ms=0.0,
                          prompt_tokens=0, prompt_ms=first, output_tokens=len(parts), eval_ms=total - first,
                          done_reason=REPEAT_ABORT)
    if final is None:
        raise OllamaUnavailable(f"Ollama closed the stream for '{model}' before it was done")
    ns = 1e-6
    used = (final.prompt_eval_count or 0) + (final.eval_count or 0)
    if used >= settings.num_ctx:
        # Ollama cuts a prompt that does not fit num_ctx (and shifts the window while decoding)
        # without an error: the answer would come from a prompt other than the one shown.
        raise ConfigError(f"'{model}' filled its context window: {final.prompt_eval_count} prompt + "
                          f"{final.eval_count} answer tokens ≥ num_ctx {settings.num_ctx}, so Ollama cut the prompt",
                          f"raise RAGFT_NUM_CTX (now {settings.num_ctx}) or lower top_k/chunk_size")
    return Generation(
        text="".join(parts),
        model=model,
        ttft_ms=ttft if ttft is not None else total,
        total_ms=total,
        load_ms=(final.load_duration or 0) * ns,
        prompt_tokens=final.prompt_eval_count or 0,
        prompt_ms=(final.prompt_eval_duration or 0) * ns,
        output_tokens=final.eval_count or 0,
        eval_ms=(final.eval_duration or 0) * ns,
        done_reason=final.done_reason,
    )
