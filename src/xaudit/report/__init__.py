"""Report stage: figures (``xaudit.report.figures``) and the self-contained HTML report."""

from .html import render_report

__all__ = ["render_report"]
