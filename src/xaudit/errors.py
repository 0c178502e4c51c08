"""User-facing errors: one message that says what was received and what is allowed."""

from __future__ import annotations


class XauditError(ValueError):
    """A problem with the user's input or environment, shown as one line by the CLI."""

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.hint = hint

    def __str__(self) -> str:  # keep the hint out of the one-line message
        return self.args[0]


class ConfigError(XauditError):
    """A recipe key is unknown, of the wrong type, or out of range."""


class DataError(XauditError):
    """A dataset could not be read: missing folder, empty class, bad column, bad images."""


class ModelError(XauditError):
    """A model or its weights could not be built or loaded."""
