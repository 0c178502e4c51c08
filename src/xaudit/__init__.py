"""xaudit: train, explain and audit image classifiers in one reproducible pipeline.

Python API (the CLI only calls these)::

    from xaudit import load_recipe, run_recipe, Pipeline
    report = run_recipe("configs/demo.yaml", overrides=["train.epochs=3"])
"""

__version__ = "0.1.0"

from .config import Recipe, load_recipe  # noqa: E402
from .errors import ConfigError, DataError, ModelError, XauditError  # noqa: E402


def __getattr__(name: str):
    # The pipeline imports torch; keep `import xaudit` light until it is needed.
    if name in {"Pipeline", "run_recipe"}:
        from . import pipeline

        return getattr(pipeline, name)
    raise AttributeError(name)


__all__ = [
    "ConfigError",
    "DataError",
    "ModelError",
    "Pipeline",
    "Recipe",
    "XauditError",
    "__version__",
    "load_recipe",
    "run_recipe",
]
