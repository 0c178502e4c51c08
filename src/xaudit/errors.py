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


class MethodRefused(XauditError):
    """A method cannot explain this model correctly (e.g. guided backprop past ReLU6): its
    numbers would be wrong, so it refuses; the audits skip it with this reason."""


_ECHO_LIMIT = 80


def echo(value: object, limit: int = _ECHO_LIMIT) -> str:
    """``repr(value)`` bounded in length and depth, for error messages that quote user input.

    A recipe value can be huge (a YAML alias bomb expands to billions of items) or recursive;
    ``reprlib`` stops after a few items and levels, and the text is cut at ``limit``.
    """
    import reprlib

    r = reprlib.Repr()
    r.maxlevel, r.maxlist, r.maxtuple, r.maxdict, r.maxset = 3, 6, 6, 6, 6
    r.maxstring = r.maxother = r.maxlong = limit
    text = r.repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def shown(text: object, limit: int = _ECHO_LIMIT) -> str:
    """``str(text)`` cut to ``limit`` characters (names quoted without their repr quotes)."""
    s = text if isinstance(text, str) else echo(text, limit)
    return s if len(s) <= limit else s[: limit - 3] + "..."
