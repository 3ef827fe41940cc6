"""The vision models people bring: convert, halve, export, check - with and without a dummy_input.

For every vision reference model of :mod:`nasviz.models` (all but the token model ``gpt_like`` and
the 1-D ``conv1d_net``) and for inline patterns written the way torchvision and timm write them
(below: a torchvision ResNet with a projection shortcut and in-place ReLUs, a timm ConvNeXt with
its ``LayerNorm2d`` subclass, a ``(C,)`` gamma reshaped to ``(1, C, 1, 1)`` and drop-path, a ViT on
torch's own ``nn.TransformerEncoderLayer``, a MobileNetV3 block with hardswish and an SE made of
``F.adaptive_avg_pool2d`` + hardsigmoid, a BiT-style ResNet with ``GroupNorm``), in both modes:

* ``nv.convert(model, mode=[("fastnas", FastNASConfig.with_divisor(4))])`` - without a
  dummy_input (as a Model Optimizer user calls it) - and with ``dummy_input=x``. The divisor is 4
  instead of the reference's 32 because these models are 16-160 channels wide (with 32 most
  groups would have one choice);
* every hparam set to the choice nearest half its original width;
* ``nv.export``; the exported model's output must equal the subnet's (``allclose``, atol 1e-5
  relative to the output's scale), else the row says ``MISMATCH``;
* FLOPs kept = ``nv.profile(exported).flops / nv.profile(original).flops`` (attention counted).

Printed per model and mode: hparams, static layer dims (all of them, the model input and output
layer included) with the most frequent reason among the others, FLOPs kept; then the median FLOPs
kept per mode (the independent check of issue #14 measured 0.53 without a dummy_input and 0.45
with, Torch-Pruning 0.26, on 25 torchvision/timm models at their real sizes).

Run: ``.venv/bin/python benchmarks/vision_families.py [--only NAME ...]`` (~1-2 min).
"""

from __future__ import annotations

import argparse
import collections
import copy
import statistics
import sys
import warnings
from collections.abc import Callable
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import nasviz as nv
from nasviz.models import REFERENCE_MODELS
from nasviz.models.efficientnet import DropPath

NOT_VISION = {"gpt_like", "conv1d_net"}
ALWAYS_STATIC = ("its input comes from the model input", "output layer")


# -- inline patterns, written as torchvision / timm write them -----------------------------------
class TVBasicBlock(nn.Module):
    """torchvision's ``BasicBlock``: in-place ReLU, ``downsample`` projection when shapes change."""

    def __init__(self, inp: int, out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inp, out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out, out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out)
        self.downsample: nn.Module | None = None
        if stride != 1 or inp != out:
            self.downsample = nn.Sequential(
                nn.Conv2d(inp, out, 1, stride, bias=False), nn.BatchNorm2d(out)
            )

    def forward(self, x: Tensor) -> Tensor:
        """Two 3x3 convs plus the (projected) identity."""
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += identity
        return cast(Tensor, self.relu(out))


class TVResNet(nn.Module):
    """torchvision's ResNet layout: 7x7 stem, max-pool, stages, ``torch.flatten(x, 1)``, fc."""

    def __init__(self, widths: tuple[int, ...] = (16, 32, 64), norm: str = "bn") -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, widths[0], 7, 2, 3, bias=False)
        self.bn1: nn.Module = (
            nn.BatchNorm2d(widths[0]) if norm == "bn" else nn.GroupNorm(4, widths[0])
        )
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        layers, inp = [], widths[0]
        for i, w in enumerate(widths):
            layers.append(
                nn.Sequential(TVBasicBlock(inp, w, 1 if i == 0 else 2), TVBasicBlock(w, w, 1))
            )
            inp = w
        self.layers = nn.Sequential(*layers)
        if norm == "gn":  # BiT-style: every BatchNorm a GroupNorm of 4 groups
            for m in list(self.modules()):
                for name, child in list(m.named_children()):
                    if isinstance(child, nn.BatchNorm2d):
                        setattr(m, name, nn.GroupNorm(4, child.num_features))
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(widths[-1], 10)

    def forward(self, x: Tensor) -> Tensor:
        """Logits."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.avgpool(self.layers(x))
        return cast(Tensor, self.fc(torch.flatten(x, 1)))


class TimmLayerNorm2d(nn.LayerNorm):
    """timm's ``LayerNorm2d``: ``F.layer_norm`` between two permutes, in an ``nn.LayerNorm``."""

    def forward(self, x: Tensor) -> Tensor:
        """LayerNorm over the channels of an NCHW tensor."""
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class TimmConvNeXtBlock(nn.Module):
    """timm's ``ConvNeXtBlock`` (conv_mlp=False): gamma ``(C,)`` reshaped to ``(1, C, 1, 1)``."""

    def __init__(self, dim: int, drop_path: float) -> None:
        super().__init__()
        self.conv_dw = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))
        self.gamma = nn.Parameter(torch.full((dim,), 0.5))
        self.drop_path = DropPath(drop_path)

    def forward(self, x: Tensor) -> Tensor:
        """Depthwise conv, channels-last MLP, layer scale, residual."""
        shortcut = x
        x = self.conv_dw(x).permute(0, 2, 3, 1)
        x = self.mlp(self.norm(x)).permute(0, 3, 1, 2)
        x = x.mul(self.gamma.reshape(1, -1, 1, 1))
        return cast(Tensor, self.drop_path(x) + shortcut)


class TimmConvNeXt(nn.Module):
    """timm's ConvNeXt layout: stem conv + ``LayerNorm2d``, stages, head norm on pooled map."""

    def __init__(self, dims: tuple[int, ...] = (16, 32)) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, dims[0], 4, 4), TimmLayerNorm2d(dims[0], eps=1e-6))
        stages: list[nn.Module] = []
        for i, d in enumerate(dims):
            down = (
                nn.Identity()
                if i == 0
                else nn.Sequential(
                    TimmLayerNorm2d(dims[i - 1], eps=1e-6), nn.Conv2d(dims[i - 1], d, 2, 2)
                )
            )
            stages.append(nn.Sequential(down, TimmConvNeXtBlock(d, 0.1), TimmConvNeXtBlock(d, 0.1)))
        self.stages = nn.Sequential(*stages)
        self.head_norm = TimmLayerNorm2d(dims[-1], eps=1e-6)
        self.fc = nn.Linear(dims[-1], 10)

    def forward(self, x: Tensor) -> Tensor:
        """Logits."""
        x = self.head_norm(F.adaptive_avg_pool2d(self.stages(self.stem(x)), 1))
        return cast(Tensor, self.fc(x.flatten(1)))


class TorchViT(nn.Module):
    """A ViT on torch's ``nn.TransformerEncoderLayer`` (norm_first), class token, pos. embedding."""

    def __init__(self, dim: int = 32, heads: int = 4, depth: int = 2) -> None:
        super().__init__()
        self.patch = nn.Conv2d(3, dim, 8, 8)
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos = nn.Parameter(torch.randn(1, 17, dim) * 0.02)
        self.blocks = nn.Sequential(
            *(
                nn.TransformerEncoderLayer(
                    dim, heads, 2 * dim, 0.0, batch_first=True, norm_first=True
                )
                for _ in range(depth)
            )
        )
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, 10)

    def forward(self, x: Tensor) -> Tensor:
        """Logits from the class token."""
        x = self.patch(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], dim=1) + self.pos
        return cast(Tensor, self.head(self.norm(self.blocks(x))[:, 0]))


class MBV3Block(nn.Module):
    """torchvision's MobileNetV3 ``InvertedResidual`` with SE (hardsigmoid) and hardswish."""

    def __init__(self, c: int, exp: int) -> None:
        super().__init__()
        self.expand = nn.Sequential(
            nn.Conv2d(c, exp, 1, bias=False), nn.BatchNorm2d(exp), nn.Hardswish()
        )
        self.dw = nn.Sequential(
            nn.Conv2d(exp, exp, 5, padding=2, groups=exp, bias=False),
            nn.BatchNorm2d(exp),
            nn.Hardswish(),
        )
        self.fc1, self.fc2 = nn.Conv2d(exp, exp // 4, 1), nn.Conv2d(exp // 4, exp, 1)
        self.project = nn.Sequential(nn.Conv2d(exp, c, 1, bias=False), nn.BatchNorm2d(c))

    def forward(self, x: Tensor) -> Tensor:
        """Expand, depthwise, squeeze-excite, project, residual."""
        y = self.dw(self.expand(x))
        scale = F.hardsigmoid(self.fc2(F.relu(self.fc1(F.adaptive_avg_pool2d(y, 1)))))
        return cast(Tensor, self.project(y * scale) + x)


class MBV3Like(nn.Module):
    """Stem, two MobileNetV3 blocks, a 1x1 head conv, pool, two Linears (torchvision's head)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16), nn.Hardswish()
        )
        self.blocks = nn.Sequential(MBV3Block(16, 64), MBV3Block(16, 48))
        self.head_conv = nn.Sequential(
            nn.Conv2d(16, 96, 1, bias=False), nn.BatchNorm2d(96), nn.Hardswish()
        )
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(
            nn.Linear(96, 128), nn.Hardswish(), nn.Dropout(0.2), nn.Linear(128, 10)
        )

    def forward(self, x: Tensor) -> Tensor:
        """Logits."""
        x = self.avgpool(self.head_conv(self.blocks(self.stem(x))))
        return cast(Tensor, self.classifier(torch.flatten(x, 1)))


def _inline(build: Callable[[], nn.Module]) -> Callable[[], tuple[nn.Module, Tensor]]:
    def factory() -> tuple[nn.Module, Tensor]:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = build().eval()
            x = torch.randn(2, 3, 32, 32)
        return model, x

    return factory


INLINE: dict[str, Callable[[], tuple[nn.Module, Tensor]]] = {
    "tv_resnet_proj (inline)": _inline(TVResNet),
    "bit_resnet_gn (inline)": _inline(lambda: TVResNet(norm="gn")),
    "timm_convnext (inline)": _inline(TimmConvNeXt),
    "torch_vit_encoder (inline)": _inline(TorchViT),
    "tv_mobilenetv3 (inline)": _inline(MBV3Like),
}


# -- one model, one mode ---------------------------------------------------------------------------
def run_one(factory: Callable[[], tuple[nn.Module, Tensor]], with_input: bool) -> dict[str, Any]:
    """Convert, select ~50%, export, check; the row of the table."""
    model, x = factory()
    with torch.no_grad():
        full_flops = nv.profile(copy.deepcopy(model), x).flops
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cfg = nv.FastNASConfig.with_divisor(4)
            nv.convert(model, mode=[("fastnas", cfg)], dummy_input=x if with_input else None)
        space = nv.search_space(model)
        hps = space.hparams
        nv.select(
            model,
            {
                n: min(hp.choices, key=lambda c: (abs(c - hp.original / 2), c))
                for n, hp in hps.items()
            },
        )
        with torch.no_grad():
            y = model(x)
            small = nv.export(model)
            z = small(x)
            scale = max(1.0, float(y.abs().max()))
            same = y.shape == z.shape and torch.allclose(y, z, atol=1e-5 * scale, rtol=1e-5)
            kept = nv.profile(small, x).flops / full_flops
    except Exception as e:  # a row that says what failed, never a crash of the whole table
        return {"ok": False, "error": f"{type(e).__name__}: {str(e)[:90]}"}
    static = space.static_table()
    reasons = collections.Counter(
        _short(str(r)) for r in static["reason"] if not str(r).startswith(ALWAYS_STATIC)
    )
    main = reasons.most_common(1)[0][0] if reasons else "-"
    return {
        "ok": same,
        "hparams": len(hps),
        "static": len(static),
        "reason": main,
        "kept": kept,
        "error": "" if same else "MISMATCH: export differs from the subnet",
    }


def _short(reason: str) -> str:
    first = reason.split(";")[0].strip()
    return first if len(first) <= 70 else first[:67] + "..."


def main(argv: list[str] | None = None) -> int:
    """Print the table and the medians."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", nargs="*", default=None, help="model names to run")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    models = {n: f for n, f in REFERENCE_MODELS.items() if n not in NOT_VISION}
    models.update(INLINE)
    if args.only:
        models = {n: f for n, f in models.items() if any(o in n for o in args.only)}
    kept: dict[bool, list[float]] = {False: [], True: []}
    ok = {False: 0, True: 0}
    print(f"{'model':28s} {'mode':9s} {'hp':>3s} {'static':>6s} {'kept':>5s}  main static reason")
    for name, factory in models.items():
        for with_input in (False, True):
            row = run_one(factory, with_input)
            mode = "dummy" if with_input else "no input"
            if "kept" not in row:
                print(f"{name:28s} {mode:9s} FAILED {row['error']}")
                continue
            ok[with_input] += bool(row["ok"])
            kept[with_input].append(row["kept"])
            flag = "" if row["ok"] else f"  [{row['error']}]"
            print(
                f"{name:28s} {mode:9s} {row['hparams']:3d} {row['static']:6d} "
                f"{row['kept']:5.2f}  {row['reason']}{flag}"
            )
        sys.stdout.flush()
    for with_input in (False, True):
        values = kept[with_input]
        mode = "with dummy_input" if with_input else "without dummy_input"
        med = statistics.median(values) if values else float("nan")
        print(
            f"{mode}: {ok[with_input]}/{len(models)} convert+export identical, "
            f"median FLOPs kept {med:.2f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
