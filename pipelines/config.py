"""One settings object for ragft.

Precedence: explicit arguments > environment (RAGFT_*) > ragft.toml > defaults.
The toml file is `$RAGFT_CONFIG`, else `./ragft.toml`, else `<data_dir>/ragft.toml`. A
`./ragft.toml` is picked up from wherever a command runs (a cloned repo, a shared folder), so it
may not set what runs a program or sends data elsewhere (IMPLICIT_FORBIDDEN); those come from a
file the user names, the data dir's file, or the environment.
"""

from __future__ import annotations

import os
import tomllib
from functools import cached_property
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from pipelines.errors import ConfigError


def default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "ragft"


# Settings that execute a program, feed a compiler, or point documents and keys at another host.
IMPLICIT_FORBIDDEN = ("ollama_bin", "ollama_cflags", "ollama_host", "chroma_url", "judge_base_url", "reference_base_url")


class _TomlSource(PydanticBaseSettingsSource):
    """Reads the optional ragft.toml; unknown keys are an error, not silently ignored."""

    def __init__(self, settings_cls: type[BaseSettings], path: Path | None, implicit: bool = False) -> None:
        super().__init__(settings_cls)
        self.path = path
        self.implicit = implicit  # found in the current directory, not named by the user

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:  # pragma: no cover
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        if self.path is None or not self.path.is_file():
            return {}
        try:
            data = tomllib.loads(self.path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{self.path} is not valid TOML: {exc}", "fix the file or remove it") from exc
        data = data.get("ragft", data)
        unknown = sorted(set(data) - set(self.settings_cls.model_fields))
        if unknown:
            known = ", ".join(sorted(self.settings_cls.model_fields))
            raise ConfigError(f"{self.path}: unknown setting(s) {', '.join(unknown)}", f"known settings: {known}")
        if self.implicit and (refused := [k for k in IMPLICIT_FORBIDDEN if k in data]):
            raise ConfigError(f"{self.path} (found in the current directory) sets {', '.join(refused)}, which ragft "
                              "takes only from a config file you name",
                              f"if you trust it: RAGFT_CONFIG={self.path}; or move those keys to "
                              "<data dir>/ragft.toml or to RAGFT_* environment variables")
        return data


def _toml_path() -> tuple[Path | None, bool]:
    """The config file and whether it was found implicitly (in the current directory)."""
    if env := os.environ.get("RAGFT_CONFIG"):
        return Path(env).expanduser(), False
    local = Path.cwd() / "ragft.toml"
    if local.is_file():
        return local, True
    data_dir = Path(os.environ.get("RAGFT_DATA_DIR") or default_data_dir()).expanduser()
    return data_dir / "ragft.toml", False


class Settings(BaseSettings):
    """Every knob ragft has. Paths derive from `data_dir` unless set on their own."""

    model_config = SettingsConfigDict(env_prefix="RAGFT_", extra="forbid", validate_assignment=True)

    data_dir: Path = Field(default_factory=default_data_dir)
    # Rebuildable heavy artefacts (Ollama binary, wheels, converted weights); tests share it.
    cache_dir: Path | None = None

    # Serving
    ollama_bin: Path | None = None  # an explicit binary wins over PATH and the cached build
    ollama_host: str | None = None  # e.g. http://127.0.0.1:11434 — a server someone else runs
    ollama_version: str = "v0.11.4"
    ollama_cflags: str | None = None  # CGO_CFLAGS/CGO_CXXFLAGS for building it; None = chosen for this CPU
    ollama_port: int = 0  # 0 = pick a free port on 127.0.0.1
    ollama_num_parallel: int = 1  # OLLAMA_NUM_PARALLEL of ragft's own server (bench/bench_parallel.py measures it)
    server_start_timeout_s: float = 60.0
    request_timeout_s: float = 300.0
    ollama_offline: bool = True  # ragft's own server gets an unreachable proxy: it never needs the internet
    answer_retries: int = 4  # attempts per answer when Ollama goes away mid-run …
    retry_backoff_s: float = 2.0  # … pausing 2, 4, 8 s between them
    num_threads: int = Field(default_factory=lambda: max(1, os.cpu_count() or 1))
    train_device: str = "auto"  # auto | cpu | cuda (train.choose_device)
    # The model that writes question/answer pairs for the synthetic recipes: a ragft model or one
    # on the Ollama server. Unset → the base model (a 135M base writes weak pairs).
    teacher_model: str | None = None

    # Model (same for every arm: fairness)
    model: str = "smollm2-135m"
    quantization: str = "q8_0"
    custom_ollama_model: str | None = None  # model name "custom": an existing Ollama model …
    custom_hf_dir: Path | None = None  # … and the HF weights it was made from (for fine-tuning)
    # Models a team brings, by hand: [models.NAME] path = "…", optional template, license
    # (`ragft models add` records its entries in <data_dir>/models.json instead).
    models: dict[str, dict[str, str]] = Field(default_factory=dict)

    # Corpora and retrieval (a corpus's [retrieval] table overrides these)
    max_file_mb: float = 50.0
    max_upload_files: int = 200  # files per upload batch (the app holds a batch in memory)
    max_question_chars: int = 2000  # a typed question; longer text belongs in a document
    chunk_size: int = 256
    chunk_overlap: int = 32
    top_k: int = 3
    retrieval_mode: str = "hybrid"  # dense | bm25 | hybrid (BM25 + dense, reciprocal-rank fused)
    chroma_url: str | None = None  # set → chromadb.HttpClient instead of the embedded store

    # Decoding (same for every arm: fairness)
    temperature: float = 0.0
    seed: int = 42
    max_tokens: int = 128
    num_ctx: int = 2048
    # Off: every answer starts from an empty prompt cache, so it never depends on the request
    # before it (generation.forget_prompt); on: faster prefill, answers reproducible only in order.
    prompt_cache: bool = False

    # LLM judge (optional). No base URL → the judge is a model on ragft's own Ollama. The API
    # key of a remote endpoint is read from the environment only (RAGFT_JUDGE_API_KEY), never here.
    judge_base_url: str | None = None
    judge_timeout_s: float = 120.0  # per metric and answer
    judge_max_tokens: int = 512
    judge_metrics: str = "all"  # or a comma-separated subset, e.g. "answer_accuracy" (fewer judge calls)

    # Reference arms `api` / `api_rag` (pipelines/reference.py): a hosted model behind any
    # OpenAI-compatible endpoint, priced per token. Its key comes from the environment only
    # (RAGFT_REFERENCE_API_KEY); the prices are the user's, stated with their date in every report.
    reference_base_url: str | None = None
    reference_model: str | None = None
    reference_input_price: float | None = Field(default=None, ge=0)  # per 1M prompt tokens
    reference_output_price: float | None = Field(default=None, ge=0)  # per 1M output tokens
    reference_prices_date: str | None = None  # when those prices were read off the provider's page
    reference_timeout_s: float = Field(default=60.0, gt=0)  # per answer
    reference_retries: int = Field(default=3, ge=0)  # waits after a 429 before the answer counts as failed …
    reference_max_wait_s: float = Field(default=60.0, ge=0)  # … each at most this long, whatever Retry-After says

    # Forgetting probe (eval/forgetting.py): items per kind (general, reading) that base and the
    # fine-tuned model answer in every evaluation with a fine-tuned arm; 0 = off (the report says so).
    probe_items: int = Field(default=96, ge=0)

    @field_validator("quantization")
    @classmethod
    def _known_quant(cls, v: str) -> str:
        allowed = {"q8_0", "q4_K_M", "q4_K_S", "f16"}
        if v not in allowed:
            raise ValueError(f"'{v}' is not a supported quantisation; choose one of {sorted(allowed)}")
        return v

    @field_validator("retrieval_mode")
    @classmethod
    def _known_mode(cls, v: str) -> str:
        if v not in ("dense", "bm25", "hybrid"):
            raise ValueError(f"'{v}' is not a retrieval mode; choose dense, bm25 or hybrid")
        return v

    @field_validator("train_device")
    @classmethod
    def _known_device(cls, v: str) -> str:
        if v not in ("auto", "cpu", "cuda"):
            raise ValueError(f"'{v}' is not a training device; choose auto, cpu or cuda")
        return v

    @field_validator("ollama_port")
    @classmethod
    def _port_range(cls, v: int) -> int:
        if not 0 <= v <= 65535:
            raise ValueError(f"port {v} is outside 0..65535")
        return v

    @field_validator("max_tokens", "num_ctx", "num_threads", "ollama_num_parallel",
                     "chunk_size", "top_k", "judge_max_tokens", "judge_timeout_s",
                     "answer_retries")
    @classmethod
    def _positive(cls, v: int) -> int:
        if v <= 0:
            raise ValueError(f"{v} must be positive")
        return v

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _TomlSource(settings_cls, *_toml_path()))

    # Derived paths -------------------------------------------------------
    @cached_property
    def cache_root(self) -> Path:
        return (self.cache_dir or self.data_dir / "cache").expanduser()

    @property
    def bin_dir(self) -> Path:
        return self.cache_root / "bin"

    @property
    def wheels_dir(self) -> Path:
        return self.cache_root / "wheels"

    @property
    def weights_dir(self) -> Path:
        return self.cache_root / "weights"

    @property
    def ollama_dir(self) -> Path:
        return self.data_dir.expanduser() / "ollama"

    @property
    def ollama_models_dir(self) -> Path:
        return self.ollama_dir / "models"

    @property
    def chroma_dir(self) -> Path:
        return self.data_dir.expanduser() / "chroma"

    @property
    def runs_db(self) -> Path:
        return self.data_dir.expanduser() / "runs.sqlite"

    def decoding_options(self) -> dict[str, Any]:
        """Ollama `options` shared by every arm."""
        return {
            "temperature": self.temperature,
            "seed": self.seed,
            "num_predict": self.max_tokens,
            "num_ctx": self.num_ctx,
            "num_thread": self.num_threads,
        }


def load_settings(**overrides: Any) -> Settings:
    """Build the settings, turning validation problems into a ConfigError that names the value."""
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'settings'}: {e['msg']} (got {e.get('input')!r})"
            for e in exc.errors()
        )
        raise ConfigError(f"invalid settings: {problems}", "set RAGFT_<NAME> or fix ragft.toml") from exc
