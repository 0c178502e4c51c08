"""lxt's AttnLRP relevance of a tiny ViT, written to a file: ``python -m tests.helpers.lxt_oracle
CASE OUT``. A process of its own, because lxt patches torch's and transformers' classes for
the whole process.

lxt 2.1's ``lxt.efficient`` imports its language-model patches on import, which need a
transformers 4.x; only its rules (``patches``, ``rules``) and its torchvision-ViT map are used
here, so that package's model index is stood in for before import.
"""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

import torch

from tests.helpers.tiny_vits import images, torchvision_vit, transformers_vit


def import_lxt_rules() -> types.ModuleType:
    spec = importlib.util.find_spec("lxt")
    models = types.ModuleType("lxt.efficient.models")
    models.__path__ = [str(Path(spec.origin).parent / "efficient" / "models")]
    models.get_default_map = lambda module: (_ for _ in ()).throw(ValueError("no default map here"))
    sys.modules["lxt.efficient.models"] = models
    import lxt.efficient.patches as patches

    return patches


def torchvision_cp(patches: types.ModuleType):
    """CP-LRP: lxt's own patch map for torchvision's ViT."""
    from lxt.efficient import monkey_patch
    from lxt.efficient.models import vit_torch
    from torchvision.models import vision_transformer

    clf = torchvision_vit()
    monkey_patch(vision_transformer, vit_torch.cp_LRP)
    return clf.module


def transformers_attnlrp(patches: types.ModuleType):
    """AttnLRP: lxt's layer-norm, activation and attention rules on transformers' ViT (eager)."""
    from transformers.activations import GELUActivation
    from transformers.models.vit import modeling_vit

    clf = transformers_vit(implementation="eager")
    patches.patch_method(patches.layer_norm_forward, torch.nn.LayerNorm)
    patches.patch_method(patches.non_linear_forward, GELUActivation, keep_original=True)
    modeling_vit.eager_attention_forward = patches.wrap_attention_forward(
        modeling_vit.eager_attention_forward)
    return clf.module


CASES = {"torchvision-cp": torchvision_cp, "transformers-attnlrp": transformers_attnlrp}


def main(case: str, out: str) -> None:
    model = CASES[case](import_lxt_rules())
    x, t = images().requires_grad_(True), torch.tensor([0, 2, 1])
    logits = model(x)
    logits[torch.arange(len(t)), t].sum().backward()
    torch.save({"relevance": (x.grad * x).detach(), "logits": logits.detach()}, out)


if __name__ == "__main__":
    main(*sys.argv[1:3])
