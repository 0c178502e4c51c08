"""Methods native to vision transformers: rollout, Chefer and LeGrad read each block's
attention probabilities (``capture.py``) and combine them across blocks (``rollout.py``,
``legrad.py``); AttnLRP propagates relevance with LRP's rules on the attention (``attnlrp.py``)."""

from . import attnlrp, legrad, rollout  # noqa: F401  (register)
from .capture import AttentionCapture
from .rollout import attention_reading, chefer_relevance, rollout_relevance

__all__ = ["AttentionCapture", "attention_reading", "chefer_relevance", "rollout_relevance"]
