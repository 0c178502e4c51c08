"""xaudit: explain and audit image classifiers, and find out whether the explanation can be trusted.

Library::

    import xaudit
    clf = xaudit.Classifier.from_torchvision("resnet18", classes=["cat", "dog"], weights="imagenet")
    maps = xaudit.explain(clf, images, methods=["integrated_gradients", "grad_cam"])
    result = xaudit.audit(clf, images, labels, methods=["saliency", "grad_cam"])
    print(result.verdict)

Pipeline (the CLI only calls these)::

    from xaudit import load_recipe, run_recipe, Pipeline
    report = run_recipe("configs/demo.yaml", overrides=["train.epochs=3"])
"""

__version__ = "0.1.0"

from .config import Recipe  # noqa: E402
from .errors import ConfigError, DataError, ModelError, XauditError  # noqa: E402
from .recipe import load_recipe  # noqa: E402

# Imported on first use: each pulls in torch, and `import xaudit` stays light.
_LAZY = {
    "Pipeline": "pipeline",
    "run_recipe": "pipeline",
    "Classifier": "models.classifier",
    "Preprocessing": "data.transforms",
    "explain": None,  # callable subpackages (see _callable.py)
    "audit": None,
    "Explanations": "api",
    "AuditReport": "api",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        if _LAZY[name] is None:
            return importlib.import_module(f".{name}", __name__)
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'xaudit' has no attribute {name!r}")


__all__ = [
    "AuditReport",
    "Classifier",
    "ConfigError",
    "DataError",
    "Explanations",
    "ModelError",
    "Pipeline",
    "Preprocessing",
    "Recipe",
    "XauditError",
    "__version__",
    "audit",
    "explain",
    "load_recipe",
    "run_recipe",
]
