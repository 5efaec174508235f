"""The few exceptions ragft raises; each front door translates them once."""

from __future__ import annotations


class RagftError(Exception):
    """Something the user can fix; `fix` says how."""

    def __init__(self, message: str, fix: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.fix = fix

    def __str__(self) -> str:
        return f"{self.message}\n  fix: {self.fix}" if self.fix else self.message


class ConfigError(RagftError):
    """A setting or a ragft.toml value is invalid."""


class UnknownNameError(RagftError):
    """A model, arm or corpus name that ragft does not know."""


class OllamaUnavailable(RagftError):
    """No Ollama binary, no way to build one, or the server cannot be started or reached."""


class ModelPrepError(RagftError):
    """Packaged weights could not be obtained, verified, converted or served."""


class CorpusError(RagftError):
    """A corpus folder, document or QA file that cannot be used as it is."""


class InputError(RagftError):
    """A typed question or an upload batch that ragft will not take as it is."""
