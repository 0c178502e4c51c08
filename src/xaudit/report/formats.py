"""Summary values as text for people: one formatting for every part of the report."""

from __future__ import annotations

from typing import Any


def fmt_number(value: Any) -> str:
    """A number for people: ints with thousands separators, floats with 3 decimals."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            return str(value)
        if value == 0.0:
            return "0"
        if abs(value) < 1e-3:
            return f"{value:.2e}"
        if abs(value) < 10:
            return f"{value:.3f}"
        if abs(value) < 1000:
            return f"{value:.1f}"
        return f"{value:,.0f}"
    return fmt_value(value)


def fmt_value(value: Any) -> str:
    """Any summary value as one line of text."""
    if value is None:
        return "–"
    if isinstance(value, bool | int | float):
        return fmt_number(value)
    if isinstance(value, list | tuple):
        return ", ".join(fmt_value(v) for v in value)
    if isinstance(value, dict):
        return ", ".join(f"{k}={fmt_value(v)}" for k, v in value.items())
    return str(value)


