from pathlib import Path

import pytest

from pipelines.config import Settings, default_data_dir, load_settings
from pipelines.errors import ConfigError


def test_defaults_derive_paths_from_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RAGFT_DATA_DIR")
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    s = load_settings()
    assert s.data_dir == tmp_path / ".local" / "share" / "ragft" == default_data_dir()
    assert s.cache_root == s.data_dir / "cache"
    assert s.bin_dir == s.cache_root / "bin"
    assert s.ollama_models_dir == s.data_dir / "ollama" / "models"
    assert s.model == "smollm2-135m" and s.quantization == "q8_0"


def test_precedence_argument_over_env_over_toml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    toml = tmp_path / "ragft.toml"
    toml.write_text('max_tokens = 64\nseed = 7\nmodel = "gemma3-270m"\n')
    monkeypatch.setenv("RAGFT_CONFIG", str(toml))
    monkeypatch.setenv("RAGFT_SEED", "11")
    s = load_settings(model="smollm2-135m")
    assert s.max_tokens == 64  # toml
    assert s.seed == 11  # env beats toml
    assert s.model == "smollm2-135m"  # argument beats toml


def test_toml_may_use_a_ragft_table(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    toml = tmp_path / "ragft.toml"
    toml.write_text("[ragft]\nnum_ctx = 1024\n")
    monkeypatch.setenv("RAGFT_CONFIG", str(toml))
    assert load_settings().num_ctx == 1024


def test_unknown_toml_key_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    toml = tmp_path / "ragft.toml"
    toml.write_text("max_tokenz = 64\n")
    monkeypatch.setenv("RAGFT_CONFIG", str(toml))
    with pytest.raises(ConfigError, match="max_tokenz"):
        load_settings()


def test_broken_toml_is_a_config_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    toml = tmp_path / "ragft.toml"
    toml.write_text("max_tokens = = 3\n")
    monkeypatch.setenv("RAGFT_CONFIG", str(toml))
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings()


@pytest.mark.parametrize(
    ("env", "value", "needle"),
    [("RAGFT_QUANTIZATION", "q3_bogus", "q3_bogus"), ("RAGFT_MAX_TOKENS", "0", "max_tokens"),
     ("RAGFT_OLLAMA_PORT", "70000", "70000")],
)
def test_bad_values_name_the_value(monkeypatch: pytest.MonkeyPatch, env: str, value: str, needle: str) -> None:
    monkeypatch.setenv(env, value)
    with pytest.raises(ConfigError, match=needle):
        load_settings()


def test_decoding_options_are_shared(settings: Settings) -> None:
    opts = settings.decoding_options()
    assert opts == {"temperature": 0.0, "seed": 42, "num_predict": settings.max_tokens,
                    "num_ctx": settings.num_ctx, "num_thread": settings.num_threads}


def test_a_ragft_toml_in_the_current_directory_cannot_run_a_program_or_redirect_data(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import subprocess
    import sys

    marker = tmp_path / "ran"
    evil = tmp_path / "ollama"
    evil.write_text(f"#!/bin/sh\ntouch {marker}\necho 'ollama version is 0.11.4'\n")
    evil.chmod(0o755)
    repo = tmp_path / "cloned-repo"
    repo.mkdir()
    (repo / "ragft.toml").write_text(f'ollama_bin = "{evil}"\njudge_base_url = "https://collector.example/v1"\n'
                                     "max_tokens = 64\n")
    monkeypatch.chdir(repo)
    monkeypatch.delenv("RAGFT_CONFIG", raising=False)
    monkeypatch.setenv("RAGFT_DATA_DIR", str(tmp_path / "data"))
    with pytest.raises(ConfigError, match="ollama_bin, judge_base_url") as exc:
        load_settings()
    assert "RAGFT_CONFIG=" in (exc.value.fix or "")
    env = {k: v for k, v in __import__("os").environ.items() if k != "RAGFT_CONFIG"}
    doctor = subprocess.run([str(Path(sys.executable).parent / "ragft"), "doctor"], cwd=repo, env=env,
                            capture_output=True, text=True)
    assert doctor.returncode == 1 and "ollama_bin" in doctor.stderr + doctor.stdout
    assert not marker.exists()  # nothing from the file was run
    # harmless keys still work from ./ragft.toml, and a file the user names may set anything
    (repo / "ragft.toml").write_text("max_tokens = 64\n")
    assert load_settings().max_tokens == 64
    named = tmp_path / "trusted.toml"
    named.write_text(f'ollama_bin = "{evil}"\n')
    monkeypatch.setenv("RAGFT_CONFIG", str(named))
    assert load_settings().ollama_bin == evil
