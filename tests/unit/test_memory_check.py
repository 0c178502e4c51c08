"""The memory guard: activations measured on fake tensors, refusals that name the key."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from xaudit.errors import ConfigError
from xaudit.models import memory
from xaudit.models.memory import Activations, check_fits, measure


def test_activations_are_measured_exactly_on_a_hand_counted_model():
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.ReLU(), nn.Conv2d(4, 2, 3, stride=2, padding=1))
    acts = measure(model, 8)
    # conv 4×8×8 and relu 4×8×8 float32 = 1,024 bytes each; strided conv 2×4×4 = 128 bytes
    assert acts == Activations(total=1024 + 1024 + 128, largest=1024)
    assert acts.forward(3) == 2 * 1024 * 3 and acts.backward(3) == 2176 * 3
    assert model.training  # the check leaves the model's mode as it found it


def test_nothing_real_is_computed_or_allocated():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
    before = [p.detach().clone() for p in model.parameters()]
    acts = measure(model, 4096)  # 8×4096×4096 float32: 512 MiB per activation, never allocated
    assert acts.largest == 8 * 4096 * 4096 * 4
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def test_refusals_name_the_key_and_what_fits(monkeypatch):
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.ReLU())  # 2,048 bytes per 8 px image
    monkeypatch.setattr(memory, "available_bytes", lambda device: 10_000)
    check_fits(model, 8, {"train.batch_size": (4, True)}, torch.device("cpu"))  # 8,192 fits
    with pytest.raises(ConfigError, match=r"^train.batch_size 5 at model.image_size 8: a batch's "
                       r"gradient pass needs at least .* at most 4 images per batch fit$"):
        check_fits(model, 8, {"train.batch_size": (5, True)}, torch.device("cpu"))
    with pytest.raises(ConfigError, match=r"^model.image_size 64: one image's gradient pass"):
        check_fits(model, 64, {}, torch.device("cpu"))  # 131,072 bytes for one image


def test_a_model_fake_tensors_cannot_run_is_not_refused(monkeypatch):
    class Numpy(nn.Module):
        def forward(self, x):
            return torch.from_numpy(x.numpy())  # a fake tensor has no data to hand to numpy

    monkeypatch.setattr(memory, "available_bytes", lambda device: 1)
    assert measure(Numpy(), 8) is None
    check_fits(Numpy(), 8, {"train.batch_size": (10**6, True)}, torch.device("cpu"))


@pytest.mark.parametrize("error", [MemoryError(), torch.OutOfMemoryError("CUDA out of memory")])
def test_running_out_of_memory_is_one_line_with_the_keys_to_lower(monkeypatch, capsys, error):
    from xaudit import cli, interrupts

    def boom(**_kw):
        raise error

    monkeypatch.setattr(cli, "app", boom)
    interrupts.entering("train")
    with pytest.raises(SystemExit) as info:
        cli._main()
    out = capsys.readouterr().err
    assert info.value.code == 1 and "Traceback" not in out
    assert out.splitlines()[0] == ("error: out of memory during the train stage: the images, "
                                   "batches or model are too large for this machine")
    assert "model.image_size" in out and "train.batch_size" in out
