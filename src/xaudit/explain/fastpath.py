"""How the engine runs explainers fast: precision, memory layout, chunk sizes, shared forwards.

Nothing here changes what an explainer computes, only how: the model is wrapped so that
its inputs are channels-last and (optionally) its forward runs under bf16 autocast; the
number of samples per forward/backward pass (IG steps, occlusion windows) is chosen from a
memory budget measured on the model and halved on out-of-memory; forwards of the same
images (f(x) for completeness, the bf16 guard, audits) are computed once and shared.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import torch
from torch import nn

from ..errors import ConfigError, XauditError

PRECISIONS = ("fp32", "bf16")
T = TypeVar("T")


@dataclass
class FastPath:
    """Execution settings of the engine (the recipe's ``explain`` section)."""

    precision: str = "fp32"  # fp32 | bf16 (autocast; results checked, failures redone in fp32)
    tolerance: float = 0.05  # relative completeness error allowed before an fp32 recompute
    adaptive_steps: bool = False  # path methods: coarse steps first, refine only failing images
    memory_budget_mb: int | None = None  # None: chosen from the device's free memory
    channels_last: bool = True

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ConfigError(
                f"explain.precision: {self.precision!r} is not allowed. Allowed: {', '.join(PRECISIONS)}"
            )
        if not self.tolerance > 0:
            raise ConfigError(f"explain.tolerance must be > 0, got {self.tolerance!r}")
        if self.memory_budget_mb is not None and self.memory_budget_mb < 1:
            raise ConfigError(f"explain.memory_budget_mb must be >= 1 or omitted, got {self.memory_budget_mb!r}")

    @classmethod
    def from_config(cls, cfg) -> FastPath:
        """From an ``ExplainConfig`` (keys it lacks keep their defaults)."""
        names = ("precision", "tolerance", "adaptive_steps", "memory_budget_mb", "channels_last")
        return cls(**{k: getattr(cfg, k) for k in names if hasattr(cfg, k)})


# ---------------------------------------------------------------- precision and layout


class FastModel(nn.Module):
    """``model`` with channels-last inputs and optional bf16 autocast; outputs in float32.

    The wrapped model's modules are the original ones, so layer hooks (CAM methods) and
    evaluation counting on the original model keep working.
    """

    def __init__(self, model: nn.Module, bf16: bool, channels_last: bool = True):
        super().__init__()
        self.model = model
        self.bf16 = bf16
        self.channels_last = channels_last

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            out = self.model(x)
        return out.float()


def prepare_model(model: nn.Module, fast: FastPath) -> None:
    """Store the weights channels-last (in place; values unchanged) where inputs will be."""
    if fast.channels_last:
        model.to(memory_format=torch.channels_last)


# ---------------------------------------------------------------- memory budget


def available_bytes(device: torch.device) -> int:
    """Free memory on ``device``: CUDA's free memory, else the host's MemAvailable."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 8 << 30


def default_budget_bytes(device: torch.device) -> int:
    """Half of free GPU memory; on the host a quarter of what is available, at most 1 GiB
    (CPU passes gain nothing from more samples, and the audits run beside the run's data);
    rounded down to a power of two.

    The pass size follows from the budget, and a pass's size can move results in the last
    float bits (the kernels block the batch differently): rounding keeps them the same from
    run to run while other jobs change the free memory a little.
    """
    free = available_bytes(device)
    budget = free // 2 if device.type == "cuda" else min(free // 4, 1 << 30)
    return 1 << max(20, int(budget).bit_length() - 1)  # at least 1 MiB


def activation_bytes(model: nn.Module, x1: torch.Tensor) -> int:
    """Bytes of all leaf-module outputs for one sample: what a backward pass keeps."""
    total = 0

    def hook(_m, _args, out) -> None:
        nonlocal total
        if isinstance(out, torch.Tensor):
            total += out.numel() * out.element_size()

    leaves = [m for m in model.modules() if not list(m.children())]
    handles = [m.register_forward_hook(hook) for m in leaves]
    try:
        with torch.inference_mode():
            model(x1[:1])
    finally:
        for h in handles:
            h.remove()
    return max(total, x1[:1].numel() * 4)


def samples_per_pass(per_sample: int, budget: int, gradients: bool, limit: int = 1024) -> int:
    """Samples per forward(/backward) pass that fit ``budget`` bytes.

    A backward pass keeps every activation and a gradient of each as it goes (≈ 2× the
    activations); an inference pass holds a few layers at a time, but perturbation methods
    also hold the perturbed copies of the inputs and the allocator keeps freed blocks (½).
    """
    cost = per_sample * 2 if gradients else max(1, per_sample // 2)
    return int(max(1, min(limit, budget // max(1, cost))))


def is_out_of_memory(err: BaseException) -> bool:
    if isinstance(err, torch.OutOfMemoryError):
        return True
    text = str(err).lower()
    return isinstance(err, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def with_backoff(run: Callable[[int], T], chunk: int, on_shrink: Callable[[int], None] | None = None) -> T:
    """``run(chunk)``, halving ``chunk`` after each out-of-memory error, down to 1."""
    while True:
        try:
            return run(chunk)
        except (RuntimeError, torch.OutOfMemoryError) as err:
            if not is_out_of_memory(err) or chunk <= 1:
                if is_out_of_memory(err):
                    raise XauditError(
                        f"out of memory with one sample per pass: {err}. Use a smaller "
                        f"image size or batch_size."
                    ) from None
                raise
            chunk = max(1, chunk // 2)
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            if on_shrink is not None:
                on_shrink(chunk)


# ---------------------------------------------------------------- shared forwards


@dataclass
class ForwardCache:
    """fp32 logits per image id, computed once and shared by methods and audits."""

    logits: dict[str, torch.Tensor] = field(default_factory=dict)
    evals: int = 0  # images this cache pushed through the model
    hits: int = 0  # images served without a forward

    def get(self, model: nn.Module, ids: Sequence[str], x: torch.Tensor) -> torch.Tensor:
        """N×K fp32 logits of ``x`` (rows named by ``ids``), on ``x``'s device."""
        missing = [n for n, i in enumerate(ids) if i not in self.logits]
        self.hits += len(ids) - len(missing)
        if missing:
            with torch.inference_mode():
                out = model(x[missing]).float().cpu()
            self.evals += len(missing)
            for n, row in zip(missing, out, strict=True):
                self.logits[ids[n]] = row
        return torch.stack([self.logits[i] for i in ids]).to(x.device)


def target_outputs(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return logits.gather(1, target.view(-1, 1)).squeeze(1)


def unique_forward(model: nn.Module, baseline: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """f(baseline)[target] per image, running each distinct baseline image once."""
    flat = baseline.flatten(1)
    first = [0]
    same_as = [0]
    for i in range(1, len(flat)):
        match = next((k for k, j in enumerate(first) if torch.equal(flat[i], flat[j])), None)
        if match is None:
            first.append(i)
            match = len(first) - 1
        same_as.append(match)
    with torch.inference_mode():
        out = model(baseline[first]).float()
    return target_outputs(out[same_as], target)


def relative_error(total: torch.Tensor, gap: torch.Tensor) -> torch.Tensor:
    """|Σ attr − gap| / |gap| per image (the convergence audit's definition)."""
    return (total.double() - gap.double()).abs() / gap.double().abs().clamp_min(1e-12)


def step_ladder(n_steps: int, adaptive: bool) -> list[int]:
    """Step counts tried in turn: n_steps alone, or a quarter, then half of it first.

    Each rung runs only for the images that missed the tolerance on the one before
    (successive doubling). Quadrature nodes of different step counts do not nest, so an
    image costs the sum of the rungs it ran: 0.25×, 0.75× or at most 1.75× n_steps.
    """
    if not adaptive:
        return [n_steps]
    rungs = sorted({max(4, n_steps // 4), max(4, n_steps // 2)})
    return [s for s in rungs if s < n_steps] + [n_steps]


def cpu_threads() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def record_path(stats, report: dict | None) -> None:
    """Note on a method's stats which occlusion path ran (``path``, images, work per window)."""
    if not report:
        return
    if report["path"] == "incremental":
        text = f"incremental (prefix to {report['split']}; each window counts as one evaluation)"
        done, n = stats.incremental_images, report["images"]
        stats.work_per_window = (stats.work_per_window * done + report["work"] * n) / (done + n)
        stats.incremental_images += n
    else:
        text = f"plain ({report['reason']})"
    if text not in stats.path.split(" | "):
        stats.path = " | ".join(p for p in (stats.path, text) if p)


# ---------------------------------------------------------------- rewritten copies of a model


def with_replaced(module: nn.Module, replace: dict[str, nn.Module]) -> nn.Module:
    """A shallow copy of ``module`` with the named descendants replaced (weights shared).

    The copy keeps the original's hook dictionaries, so evaluation counting on the model
    counts the copy's forwards too.
    """
    clone = copy.copy(module)
    clone.__dict__["_modules"] = dict(module._modules)
    heads = {name.split(".", 1)[0] for name in replace}
    for head in heads:
        if head in replace:
            clone._modules[head] = replace[head]
        else:
            inner = {n.split(".", 1)[1]: m for n, m in replace.items() if n.split(".", 1)[0] == head}
            clone._modules[head] = with_replaced(module._modules[head], inner)
    return clone
