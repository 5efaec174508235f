"""The `ragft` front door: exit codes and messages (typer's runner, real settings)."""

from pathlib import Path

import pytest
from typer.testing import CliRunner

import cli

runner = CliRunner()


def _run(*args: str) -> tuple[int, str]:
    try:
        result = runner.invoke(cli.app, list(args), catch_exceptions=False)
        return result.exit_code, result.output
    except cli.RagftError as exc:  # what main() turns into exit 1
        return 1, str(exc)


def test_doctor_fails_and_names_the_fix_without_ollama(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no ollama, no go
    monkeypatch.setenv("RAGFT_CACHE_DIR", str(tmp_path / "cache"))
    code, out = _run("doctor")
    assert code == 1
    assert "ollama binary" in out and "missing" in out


def test_unknown_arm_lists_the_known_ones() -> None:
    code, out = _run("ask", "--arm", "magic", "hi")
    assert code == 1 and "'magic'" in out and "ft_rag" in out


def test_unknown_model_lists_the_known_ones() -> None:
    code, out = _run("ask", "--model", "nope", "hi")
    assert code == 1 and "'nope'" in out and "smollm2-135m" in out


def test_models_lists_the_registry() -> None:
    code, out = _run("models")
    assert code == 0 and "smollm2-135m" in out and "gemma3-270m" in out
