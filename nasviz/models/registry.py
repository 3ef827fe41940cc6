"""``REFERENCE_MODELS``: every reference model with a matching example input.

Each entry maps a short name to a factory returning ``(model in eval mode, example input of
batch 2)``. Factories are deterministic: weights and input come from a fixed seed inside a forked
RNG, so calling one twice gives identical models and inputs and leaves the global RNG untouched.
Tests and benchmarks iterate over it; ``resnet50_like`` is left out on purpose (too big for tests).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from nasviz.models.conv_nd import Conv1dNet, Conv3dNet
from nasviz.models.convnext import ConvNeXtLike
from nasviz.models.convnext_tv import ConvNeXtTV
from nasviz.models.data_dependent import DataDependentNet
from nasviz.models.densenet import DenseNetLike
from nasviz.models.digits import DigitsCNN
from nasviz.models.efficientnet import EfficientNetLike
from nasviz.models.gpt import GPTLike
from nasviz.models.mobilenet import MobileNetV2Like
from nasviz.models.resnet import Bottleneck, ResNet, ResNeXtBottleneck, resnet_tiny
from nasviz.models.shufflenet import ShuffleNetLike
from nasviz.models.swin_like import SwinLike
from nasviz.models.unet import UNetLike
from nasviz.models.vgg import VGGLike
from nasviz.models.vit import ViTLike
from nasviz.models.vit_mha import ViTMHA

__all__ = ["REFERENCE_MODELS", "ModelFactory"]

ModelFactory = Callable[[], tuple[nn.Module, Tensor]]
"""A zero-argument factory returning ``(model in eval mode, example input of batch 2)``."""

_SEED = 0


def _reference(
    build: Callable[[], nn.Module], make_input: Callable[[torch.Generator], Tensor]
) -> ModelFactory:
    def factory() -> tuple[nn.Module, Tensor]:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(_SEED)
            model = build().eval()
        return model, make_input(torch.Generator().manual_seed(_SEED))

    return factory


def _images(*shape: int) -> Callable[[torch.Generator], Tensor]:
    return lambda gen: torch.randn(2, *shape, generator=gen)


def _tokens(vocab_size: int, length: int) -> Callable[[torch.Generator], Tensor]:
    return lambda gen: torch.randint(0, vocab_size, (2, length), generator=gen)


def _resnet_bottleneck_tiny() -> nn.Module:
    return ResNet(Bottleneck, (1, 1), (8, 16))


def _resnext_tiny() -> nn.Module:
    return ResNet(ResNeXtBottleneck, (1, 1), (16, 32))


REFERENCE_MODELS: dict[str, ModelFactory] = {
    "resnet_tiny": _reference(resnet_tiny, _images(3, 32, 32)),
    "resnet_bottleneck_tiny": _reference(_resnet_bottleneck_tiny, _images(3, 32, 32)),
    "resnext_tiny": _reference(_resnext_tiny, _images(3, 32, 32)),
    "mobilenetv2_like": _reference(MobileNetV2Like, _images(3, 32, 32)),
    "densenet_like": _reference(DenseNetLike, _images(3, 32, 32)),
    "vgg_like": _reference(VGGLike, _images(3, 32, 32)),
    "shufflenet_like": _reference(ShuffleNetLike, _images(3, 32, 32)),
    "convnext_like": _reference(ConvNeXtLike, _images(3, 32, 32)),
    "vit_like": _reference(ViTLike, _images(3, 32, 32)),
    "vit_mha": _reference(ViTMHA, _images(3, 32, 32)),
    "convnext_tv": _reference(ConvNeXtTV, _images(3, 32, 32)),
    "swin_like": _reference(SwinLike, _images(3, 32, 32)),
    "efficientnet_like": _reference(EfficientNetLike, _images(3, 32, 32)),
    "gpt_like": _reference(GPTLike, _tokens(64, 16)),
    "conv1d_net": _reference(Conv1dNet, _images(3, 64)),
    "conv3d_net": _reference(Conv3dNet, _images(1, 8, 16, 16)),
    "unet_like": _reference(UNetLike, _images(3, 32, 32)),
    "data_dependent_net": _reference(DataDependentNet, _images(3, 16, 16)),
    "digits_cnn": _reference(DigitsCNN, lambda gen: torch.rand(2, 1, 8, 8, generator=gen)),
}
