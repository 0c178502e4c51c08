"""Methods native to vision transformers: they read each block's attention probabilities
(``capture.py``) and combine them across blocks (``rollout.py``)."""

from . import legrad, rollout  # noqa: F401  (register)
from .capture import AttentionCapture
from .rollout import attention_reading, chefer_relevance, rollout_relevance

__all__ = ["AttentionCapture", "attention_reading", "chefer_relevance", "rollout_relevance"]
