"""The few exceptions ragft raises; each front door translates them once.

A fix that names a choice the user makes (a setting of the fine-tune, a corpus's name) names it
with `option("max_length")`, not with a flag: the CLI spells it `--max-length`, the app names
the field that sets it. `str(exc)` and logs use the CLI's spelling.
"""

from __future__ import annotations

import re
from collections.abc import Callable

_OPTION = re.compile(r"\{option:([a-z_]+)\}")


def option(name: str) -> str:
    """A user's choice named in an error's text, spelled by each front door (see `RagftError.fix_for`)."""
    return "{option:" + name + "}"


def cli_option(name: str) -> str:
    return "--" + name.replace("_", "-")


def spell(text: str, spelling: Callable[[str], str] = cli_option) -> str:
    return _OPTION.sub(lambda m: spelling(m.group(1)), text)


class RagftError(Exception):
    """Something the user can fix; `fix` says how."""

    def __init__(self, message: str, fix: str | None = None) -> None:
        super().__init__(message)
        self.raw_message = message
        self.raw_fix = fix

    @property
    def message(self) -> str:
        return spell(self.raw_message)

    @property
    def fix(self) -> str | None:
        return spell(self.raw_fix) if self.raw_fix else self.raw_fix

    def message_for(self, spelling: Callable[[str], str]) -> str:
        return spell(self.raw_message, spelling)

    def fix_for(self, spelling: Callable[[str], str]) -> str | None:
        return spell(self.raw_fix, spelling) if self.raw_fix else self.raw_fix

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
