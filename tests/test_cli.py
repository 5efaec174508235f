"""The `ragft` front door through cli.main(): exit codes and messages (real settings)."""

from pathlib import Path

import pytest

import cli
from tests.helpers import run_cli as _run


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


def test_cli_reference_is_generated_from_the_code(tmp_path: Path) -> None:
    import subprocess
    import sys

    typer_bin = Path(sys.executable).parent / "typer"
    out = tmp_path / "cli.md"
    subprocess.run([str(typer_bin), "cli", "utils", "docs", "--name", "ragft", "--output", str(out)],
                   cwd=Path(__file__).resolve().parents[1], check=True, capture_output=True)
    committed = Path(__file__).resolve().parents[1] / "docs" / "cli.md"
    assert out.read_text() == committed.read_text(), "docs/cli.md is stale: run `make docs`"


def test_index_and_rag_need_a_known_corpus() -> None:
    code, out = _run("index", "no-such-corpus")
    assert code == 1 and "'no-such-corpus' is not a known corpus" in out
    code, out = _run("ask", "--arm", "rag", "--corpus", "no-such-corpus", "hi")
    assert code == 1 and "no-such-corpus" in out


def test_corpus_import_and_show(tmp_path: Path, squad_file: Path) -> None:
    squad = squad_file
    code, out = _run("corpus", "import-squad", str(squad), "--name", "sq", "--articles", "Chloroplast")
    assert code == 0 and "63 docs" in out
    code, out = _run("corpus", "show", "sq")
    assert code == 0 and "CC BY-SA 4.0" in out


def test_ids_and_model_names_are_never_cut_in_an_80_column_terminal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run ids and model names are what a user copies into --resume or `ollama run`: whole, on one line."""
    import json

    from pipelines import finetune_runs
    from pipelines.config import Settings

    run_id = "20261124T101500-squad-shifts-new-york-times-smollm2-135m"
    model = "ragft-smollm2-135m-squad-shifts-new-york-times-ft-v2:q8_0"
    run_dir = finetune_runs.runs_dir(Settings()) / run_id
    run_dir.mkdir(parents=True)
    (run_dir / "run.json").write_text(json.dumps({
        "run_id": run_id, "status": "served", "recipes": ["qa"], "ollama_model": model,
        "leakage": {"verbatim": 0, "near_verbatim": 1, "paraphrase": 8}, "training": {"steps": 40, "tokens_per_s": 150.2}}))
    for width in (80, 200):
        monkeypatch.setattr(cli.console, "width", width)
        code, out = _run("finetune-runs")
        assert code == 0 and "…" not in out
        lines = out.splitlines()
        assert any(run_id in line for line in lines) and any(model in line for line in lines), out
        code, out = _run("models")
        assert code == 0 and "…" not in out and any("ragft-smollm2-135m" in line or "smollm2-135m" in line for line in lines)
