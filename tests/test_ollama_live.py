"""The real round trip: ragft's own Ollama server, the packaged base model, a real answer."""

import contextlib
import os
import signal
import socket
import threading
import time

import pytest

from pipelines import generation, serving
from pipelines.arms import get_arm
from pipelines.config import Settings
from pipelines.errors import ConfigError

pytestmark = [pytest.mark.ollama, pytest.mark.slow]


def test_server_is_loopback_only_and_healthy(ollama_server: serving.Server) -> None:
    assert ollama_server.url.startswith("http://127.0.0.1:")
    assert serving.server_version(ollama_server.url) == "0.11.4"


def test_round_trip_answers_with_timings(live_settings: Settings, ollama_server: serving.Server, base_model: str) -> None:
    tokens: list[str] = []
    gen = generation.generate(ollama_server, live_settings, base_model, "What is the capital of France?",
                           on_token=tokens.append)
    assert gen.text.strip() and "".join(tokens) == gen.text
    assert "Paris" in gen.text  # temperature 0, fixed seed: deterministic
    assert gen.output_tokens > 0 and gen.prompt_tokens > 0
    assert gen.eval_ms > 0 and gen.tokens_per_s > 0
    assert 0 < gen.ttft_ms <= gen.total_ms


def test_base_arm_is_deterministic(live_settings: Settings, ollama_server: serving.Server, base_model: str) -> None:
    """Temperature 0, and no answer depends on the request before it (Ollama's prompt cache is emptied first)."""
    arm = get_arm("base", live_settings, ollama_server)
    first = arm.answer("Name a primary colour.")
    second = arm.answer("Name a primary colour.")  # would reuse the whole cached prompt
    arm.answer("What is the capital of France?")
    third = arm.answer("Name a primary colour.")  # would reuse the shared system-prompt prefix
    assert first.text == second.text == third.text and first.model == base_model
    assert first.generation.prompt_tokens == third.generation.prompt_tokens  # the whole prompt was evaluated


def test_running_server_is_reused(live_settings: Settings, ollama_server: serving.Server) -> None:
    again = serving.ensure_server(live_settings)
    assert again.pid == ollama_server.pid and again.url == ollama_server.url


def test_a_server_too_busy_to_answer_at_once_is_waited_for_not_replaced(live_settings: Settings,
                                                                         ollama_server: serving.Server) -> None:
    """A server that misses one health probe (seen under training load in CI) is still the one server:
    starting a second would orphan the first and leave two on one models dir."""
    assert ollama_server.pid is not None
    os.kill(ollama_server.pid, signal.SIGSTOP)  # silent, as a server whose every core is taken
    resume = threading.Timer(3.0, os.kill, (ollama_server.pid, signal.SIGCONT))
    resume.start()
    try:
        again = serving.ensure_server(live_settings)
    finally:
        resume.join()
    assert again.pid == ollama_server.pid and again.url == ollama_server.url


def test_a_server_that_never_answers_is_ended_before_another_starts(tmp_path_factory: pytest.TempPathFactory,
                                                                     live_settings: Settings) -> None:
    s = live_settings.model_copy(update={"data_dir": tmp_path_factory.mktemp("hung"), "server_start_timeout_s": 2.0})
    hung = serving.start_server(s)
    assert hung.pid is not None
    os.kill(hung.pid, signal.SIGSTOP)
    try:
        fresh = serving.ensure_server(s)
        assert fresh.pid != hung.pid and serving.server_version(fresh.url)
        assert _serves_of(s) == [fresh.pid]  # the silent one is gone, not orphaned beside the new one
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(hung.pid, signal.SIGKILL)
        serving.stop_server(s)


def test_busy_port_moves_to_a_free_one(tmp_path_factory: pytest.TempPathFactory, live_settings: Settings) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        busy = s.getsockname()[1]
        other = live_settings.model_copy(update={"data_dir": tmp_path_factory.mktemp("busy"), "ollama_port": busy})
        server = serving.start_server(other)
        try:
            assert server.url != f"http://127.0.0.1:{busy}"
            assert serving.server_version(server.url)
        finally:
            assert serving.stop_server(other)
    assert serving.running_server(other) is None


def _serves_of(settings: Settings) -> list[int]:
    """`ollama serve` processes whose models live in this data dir."""
    import psutil

    found = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        try:
            cmd = p.info["cmdline"] or []
            if len(cmd) > 1 and cmd[1] == "serve" and p.environ().get("OLLAMA_MODELS") == str(settings.ollama_models_dir):
                found.append(p.info["pid"])
        except psutil.Error:
            continue
    return found


def test_two_processes_starting_a_server_at_once_share_one(tmp_path_factory: pytest.TempPathFactory,
                                                          live_settings: Settings) -> None:
    import subprocess
    import sys

    data = tmp_path_factory.mktemp("race")
    other = live_settings.model_copy(update={"data_dir": data})
    code = ("import sys; from pathlib import Path; from pipelines import serving; from pipelines.config import Settings; "
            "s = Settings(data_dir=Path(sys.argv[1]), cache_dir=Path(sys.argv[2])); print(serving.ensure_server(s).pid)")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(data), str(live_settings.cache_root)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    try:
        pids = {p.communicate(timeout=120)[0].strip() for p in procs}
        assert all(p.returncode == 0 for p in procs), [p.stderr.read() if p.stderr else "" for p in procs]
        assert len(pids) == 1, pids  # one server, which both use
        assert len(_serves_of(other)) == 1
    finally:
        serving.stop_server(other)


def test_dead_server_is_restarted_on_next_call(live_settings: Settings, ollama_server: serving.Server,
                                               base_model: str) -> None:
    assert ollama_server.pid is not None
    os.killpg(ollama_server.pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while serving.server_version(ollama_server.url, timeout=0.5) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert serving.running_server(live_settings) is None
    gen = generation.generate(ollama_server, live_settings, base_model, "What is the capital of France?")
    assert "Paris" in gen.text
    assert serving.running_server(live_settings) is not None
    runners = serving._runner_pids(live_settings)
    assert len(runners) == 1  # the dead server's runner was cleaned up; only the new one is left


def test_first_create_on_a_fresh_server_passes_its_smoke_test(tmp_path_factory: pytest.TempPathFactory,
                                                              live_settings: Settings) -> None:
    """Ollama 0.11.4 quantises wrongly until its server process has loaded a model ("6666…");
    ragft's create never quantises in a cold server, so the first create is right the first time."""
    from pipelines import models

    s = live_settings.model_copy(update={"data_dir": tmp_path_factory.mktemp("fresh-server")})
    server = serving.start_server(s, print)  # a new process and an empty models directory
    try:
        log: list[str] = []
        name = models.ensure_served(models.get_spec("smollm2-135m", s), s, server, log.append)
        assert not [m for m in log if "failed its smoke test" in m], log
        gen = generation.generate(server, s.model_copy(update={"max_tokens": 16}), name, "Say hello in one short sentence.")
        assert gen.text.strip() and not models.looks_degenerate(gen.text)
        assert not [m for m in generation.served_models(server, s) if "staging" in m]  # the f16 step is cleaned up
    finally:
        serving.stop_server(s)


def test_a_prompt_that_overflows_num_ctx_is_an_error_not_a_silent_cut(live_settings: Settings,
                                                                       ollama_server: serving.Server,
                                                                       base_model: str) -> None:
    small = live_settings.model_copy(update={"num_ctx": 256})
    long_prompt = "Context:\n" + " ".join(f"Fact {i}: the lamp number {i} is green." for i in range(120)) + \
        "\n\nQuestion: what colour is lamp 3?\nAnswer:"
    with pytest.raises(ConfigError, match="filled its context window") as err:
        generation.generate(ollama_server, small, base_model, long_prompt)
    assert "RAGFT_NUM_CTX" in (err.value.fix or "")
    generation.generate(ollama_server, small, base_model, "Say hi.")  # a prompt that fits is answered
