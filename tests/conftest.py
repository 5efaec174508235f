"""Every test gets its own data dir; tests marked `ollama` share one real server per session.

Heavy, rebuildable artefacts (the Ollama binary, downloaded wheels, converted weights) live
in a shared cache so that a second test run does not rebuild them; what a test creates on
the server (models) and writes (runs, indexes) lives in a temp dir.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipelines import corpus as corpora
from pipelines import finetune as ft
from pipelines import models, rag, serving
from pipelines.config import Settings, default_data_dir
from pipelines.train import LoraParams

TEST_PROBE_ITEMS = 2
SHARED_CACHE = Path(os.environ.get("RAGFT_TEST_CACHE_DIR") or default_data_dir() / "cache").expanduser()


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("RAGFT_") or key == "OLLAMA_HOST":
            monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("RAGFT_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("RAGFT_CONFIG", str(tmp_path / "no-such-ragft.toml"))
    # The forgetting probe's full 2 × 96 items would add ~400 answers to every test evaluation
    # with a fine-tuned arm; two per kind exercise the same path (tests/test_eval.py checks it).
    monkeypatch.setenv("RAGFT_PROBE_ITEMS", str(TEST_PROBE_ITEMS))


# The externally written benchmark beside the repo (../shared, also present in CI); RAGFT_SHARED_DIR
# points elsewhere. Tests that need it skip, saying so, where it is absent.
SHARED_DIR = Path(os.environ.get("RAGFT_SHARED_DIR") or Path(__file__).resolve().parents[2] / "shared")
SQUAD_FILE = SHARED_DIR / "datasets" / "squad-v1.1-dev" / "squad-dev-4-articles.json"


@pytest.fixture(scope="session")
def squad_file() -> Path:
    if not SQUAD_FILE.is_file():
        pytest.skip(f"the shared SQuAD subset is not at {SQUAD_FILE} (set RAGFT_SHARED_DIR to the folder holding "
                    "datasets/squad-v1.1-dev)")
    return SQUAD_FILE


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", cache_dir=tmp_path / "cache")


@pytest.fixture(scope="session")
def live_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return Settings(data_dir=tmp_path_factory.mktemp("live-data"), cache_dir=SHARED_CACHE, probe_items=TEST_PROBE_ITEMS)


@pytest.fixture(scope="session")
def ollama_server(live_settings: Settings) -> Iterator[serving.Server]:
    """A real `ollama serve` (found on PATH, cached, or built from the Go module proxy)."""
    server = serving.start_server(live_settings, print)
    yield server
    serving.stop_server(live_settings)


@pytest.fixture(scope="session", autouse=True)
def _stop_test_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Tests that use their own data dir start their own server; none may outlive the session."""
    yield
    for state in tmp_path_factory.getbasetemp().rglob("ollama/server.json"):
        serving.stop_server(Settings(data_dir=state.parent.parent))


@pytest.fixture(scope="session")
def base_model(live_settings: Settings, ollama_server: serving.Server) -> str:
    """The default base model, created on the session's server from the packaged weights."""
    spec = models.get_spec(live_settings.model, live_settings)
    return models.ensure_served(spec, live_settings, ollama_server, print)


@pytest.fixture(scope="session")
def demo_env(tmp_path_factory: pytest.TempPathFactory, live_settings: Settings, ollama_server: serving.Server,
             base_model: str) -> tuple[Settings, corpora.Corpus]:
    """The demo corpus indexed and fine-tuned (1 epoch) on the session's server: all four arms work."""
    s = live_settings.model_copy(update={"data_dir": tmp_path_factory.mktemp("eval-data")})
    c = corpora.load("port-vellmar", s)
    rag.build_index(c, s)
    ft.finetune(c, s, ollama_server, ["qa"], LoraParams(epochs=1, batch_size=16, checkpoint_every=100))
    return s, c
