"""Error paths of serving.py that need no Ollama behaviour: missing binary, failed build, busy port."""

import os
import socket
import stat
from pathlib import Path

import pytest

from pipelines import generation, ollama_build, procs, serving
from pipelines.config import Settings
from pipelines.errors import OllamaUnavailable


def _path_with(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, scripts: dict[str, str]) -> None:
    bindir = tmp_path / "fakebin"
    bindir.mkdir()
    for name, body in scripts.items():
        p = bindir / name
        p.write_text("#!/bin/sh\n" + body + "\n")
        p.chmod(p.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", str(bindir))


def test_no_ollama_and_no_go_names_both_ways(settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _path_with(tmp_path, monkeypatch, {})
    assert ollama_build.find_binary(settings) is None
    with pytest.raises(OllamaUnavailable) as exc:
        ollama_build.ensure_binary(settings)
    fix = exc.value.fix or ""
    assert "ollama" in fix and "go install github.com/ollama/ollama@v0.11.4" in fix
    assert not settings.bin_dir.exists() or not any(settings.bin_dir.iterdir())


def test_failed_build_leaves_nothing_behind(settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _path_with(tmp_path, monkeypatch, {"go": 'echo "cgo: C compiler not found" >&2; exit 2'})
    with pytest.raises(OllamaUnavailable, match="C compiler not found"):
        ollama_build.build_binary(settings)
    assert list(settings.bin_dir.iterdir()) == []


def test_configured_binary_must_exist(settings: Settings, tmp_path: Path) -> None:
    s = settings.model_copy(update={"ollama_bin": tmp_path / "nope"})
    with pytest.raises(OllamaUnavailable, match="RAGFT_OLLAMA_BIN"):
        ollama_build.find_binary(s)


def test_version_is_read_from_the_binary(settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _path_with(tmp_path, monkeypatch, {"ollama": 'echo "Warning: client version is 0.11.4" >&2'})
    found = ollama_build.find_binary(settings)
    assert found is not None and found.version == "0.11.4" and found.source == "PATH"


def test_unreachable_configured_host_is_an_error(settings: Settings) -> None:
    s = settings.model_copy(update={"ollama_host": f"127.0.0.1:{procs.free_port()}"})
    assert serving.running_server(s) is None
    with pytest.raises(OllamaUnavailable, match="RAGFT_OLLAMA_HOST"):
        serving.ensure_server(s)


def test_busy_port_is_detected() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert procs.port_in_use(port)
    assert not procs.port_in_use(port)


def test_stale_state_file_is_not_reused(settings: Settings) -> None:
    settings.ollama_dir.mkdir(parents=True)
    (settings.ollama_dir / "server.json").write_text(
        f'{{"url": "http://127.0.0.1:9", "pid": 999999, "models_dir": "{settings.ollama_models_dir}"}}')
    assert serving.running_server(settings) is None
    assert serving.stop_server(settings) is False
    assert not (settings.ollama_dir / "server.json").exists()
    assert os.environ.get("OLLAMA_HOST") is None


def test_serve_stop_never_kills_a_process_that_reused_the_pid(settings: Settings) -> None:
    import subprocess

    # after a reboot, server.json's pid belongs to someone else's process
    bystander = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        settings.ollama_dir.mkdir(parents=True)
        (settings.ollama_dir / "server.json").write_text(
            f'{{"url": "http://127.0.0.1:9", "pid": {bystander.pid}, "models_dir": "{settings.ollama_models_dir}", '
            f'"binary": "/opt/ragft/ollama", "started": 1.0}}')
        assert serving.running_server(settings) is None
        assert serving.stop_server(settings) is False
        assert bystander.poll() is None  # alive: not SIGKILLed
    finally:
        bystander.kill()
        bystander.wait()


def _chunks(pieces: list[str], done: bool) -> list[object]:
    import ollama

    out: list[object] = [ollama.GenerateResponse(model="m", response=p, done=False) for p in pieces]
    if done:
        out.append(ollama.GenerateResponse(model="m", response="", done=True, done_reason="stop", prompt_eval_count=5,
                                           eval_count=len(pieces), eval_duration=10**6, prompt_eval_duration=10**6))
    return out


def test_an_answer_ollama_cut_for_repeating_one_token_is_kept(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ollama 0.11.4 closes the stream without a final chunk after 31 identical tokens (seen live:
    a fine-tuned Qwen answering '…at least 5000000…'); that is an answer, not a dead server."""
    pieces = ["A", " petition", " of", " 5"] + ["0"] * 31
    monkeypatch.setattr(generation, "forget_prompt", lambda *a: None)
    monkeypatch.setattr(generation, "_stream", lambda *a: iter(_chunks(pieces, done=False)))
    server = serving.Server("http://127.0.0.1:9", None, None)
    gen = generation.generate(server, settings, "m", "How many signatures?")
    assert gen.text == "A petition of 5" + "0" * 31 and gen.done_reason == generation.REPEAT_ABORT
    assert gen.output_tokens == len(pieces)
    monkeypatch.setattr(generation, "_stream", lambda *a: iter(_chunks(["A", " short"], done=False)))
    with pytest.raises(OllamaUnavailable, match="before it was done"):  # a stream cut for any other reason
        generation.generate(server, settings, "m", "How many signatures?")
    assert not generation.repeat_aborted(["0"] * 30) and generation.repeat_aborted(["x"] + ["0"] * 31)
