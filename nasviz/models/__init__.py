"""Small reference models for demos, tests and benchmarks.

One module per family, each sized for tiny CPU inputs (3x32x32 images, 1x8x8 digits, 16-token
sequences), symbolically traceable with ``torch.fx.symbolic_trace`` (except
``DataDependentNet``, which is untraceable at the top level on purpose) and deterministic given
``torch.manual_seed``. Every family exercises a different channel-coupling pattern: residual
adds (ResNet, MobileNet), concatenation (DenseNet, UNet, ShuffleNet), depthwise convs,
flatten -> linear (VGG), channels-last norms (ConvNeXt), attention heads (ViT, GPT), tied weights
(GPT), layer subclasses with their own forward (torchvision's ``LayerNorm2d``, timm's
``BatchNormAct2d`` in EfficientNet), shifted windows (Swin). ``REFERENCE_MODELS`` maps a short
name to a factory of ``(model, example input)``.

Example:
    >>> from nasviz.models import REFERENCE_MODELS
    >>> model, x = REFERENCE_MODELS["resnet_tiny"]()
    >>> model(x).shape
    torch.Size([2, 10])
"""

from __future__ import annotations

from nasviz.models.conv_nd import Conv1dNet, Conv3dNet
from nasviz.models.convnext import ConvNeXtBlock, ConvNeXtLike, LayerNorm2d
from nasviz.models.convnext_tv import CNBlock, ConvNeXtTV, LayerNorm2dTV
from nasviz.models.data_dependent import DataDependentNet
from nasviz.models.densenet import DenseLayer, DenseNetLike, Transition
from nasviz.models.digits import DigitsCNN
from nasviz.models.efficientnet import BatchNormAct2d, EfficientNetLike, MBConv
from nasviz.models.gpt import CausalSelfAttention, GPTBlock, GPTLike
from nasviz.models.mobilenet import InvertedResidual, MobileNetV2Like, SqueezeExcitation
from nasviz.models.registry import REFERENCE_MODELS, ModelFactory
from nasviz.models.resnet import (
    BasicBlock,
    Bottleneck,
    ResNet,
    ResNeXtBottleneck,
    resnet50_like,
    resnet_tiny,
)
from nasviz.models.shufflenet import ShuffleNetLike, ShuffleUnit, channel_shuffle
from nasviz.models.swin_like import SwinBlock, SwinLike
from nasviz.models.unet import DoubleConv, UNetLike
from nasviz.models.vgg import VGGLike
from nasviz.models.vit import Attention, Mlp, TransformerBlock, ViTLike
from nasviz.models.vit_mha import EncoderBlock, ViTMHA

__all__ = [
    "REFERENCE_MODELS",
    "Attention",
    "BasicBlock",
    "BatchNormAct2d",
    "Bottleneck",
    "CNBlock",
    "CausalSelfAttention",
    "Conv1dNet",
    "Conv3dNet",
    "ConvNeXtBlock",
    "ConvNeXtLike",
    "ConvNeXtTV",
    "DataDependentNet",
    "DenseLayer",
    "DenseNetLike",
    "DigitsCNN",
    "DoubleConv",
    "EfficientNetLike",
    "EncoderBlock",
    "GPTBlock",
    "GPTLike",
    "InvertedResidual",
    "LayerNorm2d",
    "LayerNorm2dTV",
    "MBConv",
    "Mlp",
    "MobileNetV2Like",
    "ModelFactory",
    "ResNeXtBottleneck",
    "ResNet",
    "ShuffleNetLike",
    "ShuffleUnit",
    "SqueezeExcitation",
    "SwinBlock",
    "SwinLike",
    "TransformerBlock",
    "Transition",
    "UNetLike",
    "VGGLike",
    "ViTLike",
    "ViTMHA",
    "channel_shuffle",
    "resnet50_like",
    "resnet_tiny",
]
