"""The settings ``vs_modelopt.py`` runs: a model, its data, its calibration loader.

* ``digits8``: the demo's ``DigitsCNN(width=48)`` on the 8x8 digits, calibration batches as
  ``--calib-batch-size``/``--calib-batches`` say (``max_iter_data_loader`` passed to both tools);
* ``digits32`` (issue #16's independent setting): the same residual digits CNN on the digits
  upsampled to 32x32 (bilinear), the calibration ``data_loader`` = the whole training split in
  batches of 16 (68 batches), ``max_iter_data_loader`` left at each tool's default (50);
* ``resnet64``: the ResNet-style reference (``ResNet(BasicBlock, [1, 1, 1], [16, 32, 64])``,
  one input channel, stride-2 stem) on the digits upsampled to 64x64, calibration as ``digits32``.

Every setting trains its model with ``train_classifier`` (batch 64, seed 0) and scores
``evaluate_accuracy(model, val)`` (270 validation images, ``model.eval()``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

SETTINGS = ("digits8", "digits32", "resnet64")


class Resized:
    """A loader's ``(images, labels)`` batches with the images resized to ``size`` x ``size``."""

    def __init__(self, loader: Any, size: int) -> None:
        self.loader, self.size = loader, size

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for x, y in self.loader:
            yield F.interpolate(x, size=(self.size, self.size), mode="bilinear"), y

    def __len__(self) -> int:
        return len(self.loader)


@dataclass
class Setting:
    """A model and the loaders of one setting (see the module docstring)."""

    name: str
    model: nn.Module
    train: Any
    val: Any
    test: Any
    calib: Any
    max_iter: int | None  # None: not passed (each tool's default)
    describe: str


def make_setting(
    name: str, epochs: int, calib_bs: int = 16, calib_batches: int = 50, advance: bool = True
) -> Setting:
    """The untrained model and the loaders of setting ``name`` (``advance``: move digits8's
    shuffling generator past ``epochs`` training epochs, as training in the parent left it).
    """
    from nasviz.datasets import digits_loaders
    from nasviz.models import DigitsCNN
    from nasviz.models.resnet import BasicBlock, ResNet

    torch.manual_seed(0)
    loaders = digits_loaders(batch_size=64, seed=0)
    if name == "digits8":
        if advance:
            for _ in range(epochs):
                for _batch in loaders.train:
                    pass
        calib = loaders.train if calib_bs == 64 else digits_loaders(calib_bs, seed=0).train
        return Setting(
            name, DigitsCNN(width=48), loaders.train, loaders.val, loaders.test, calib,
            calib_batches,
            f"DigitsCNN(width=48) at 8x8; calibration: {calib_batches} batches of {calib_bs}",
        )  # fmt: skip
    size = {"digits32": 32, "resnet64": 64}[name]
    model: nn.Module
    if name == "digits32":
        model = DigitsCNN(width=48)
        what = "DigitsCNN(width=48) at 32x32"
    else:
        model = ResNet(BasicBlock, [1, 1, 1], [16, 32, 64], in_channels=1, stem_stride=2)
        what = "ResNet(BasicBlock, [1,1,1], [16,32,64], stride-2 stem) at 64x64"
    calib = Resized(digits_loaders(batch_size=16, seed=0).train, size)  # type: ignore[assignment]  # test data typed loosely
    return Setting(
        name, model, Resized(loaders.train, size), Resized(loaders.val, size),
        Resized(loaders.test, size), calib, None,
        f"{what}; calibration: the whole training split in {len(calib)} batches of 16, "
        "max_iter_data_loader at each tool's default (50)",
    )  # fmt: skip


def train_setting(name: str, epochs: int) -> nn.Module:
    """The trained model of setting ``name``."""
    from nasviz.datasets import train_classifier

    s = make_setting(name, epochs, advance=False)
    train_classifier(s.model, s.train, epochs=epochs, lr=1e-2)
    return s.model.eval()
