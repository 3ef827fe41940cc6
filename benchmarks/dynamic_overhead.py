"""What dynamic layers cost at inference time, full size and at a subnet.

Builds a small ResNet-ish CNN inline (a stem, two basic blocks - the second one strided with a
1x1 shortcut -, a MobileNet-style inverted residual with a depthwise conv, and a two-layer
classifier head), converts its Conv2d, BatchNorm2d and Linear layers to dynamic twins by hand with
the base API, and shares one hparam per prunable width that does not feed a residual add:

* each basic block: ``conv1.out = bn1 = conv2.in``;
* the inverted residual: ``expand.out = bn = depthwise.in (its out follows) = bn_dw = project.in``;
* the head: ``fc1.out = fc2.in``.

Then it measures, in one process with ``torch.no_grad()`` and one thread, the median time per
forward over several timings of many calls each, interleaving the two models it compares:

* full-size overhead: the converted model with every hparam at full size vs the plain model
  (and with only the convs and linears dynamic);
* subnet overhead: the converted model at a fixed half-width subnet vs its exported model (and,
  to tell the layer families apart, the same with only the convs and linears left dynamic).

Run: ``.venv/bin/python benchmarks/dynamic_overhead.py [--batch 16] [--repeat 15] [--number 10]``.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn
from typing_extensions import override

from nasviz.dynamic.base import DynamicModule, dynamic_class_for
from nasviz.dynamic.conv import DynamicConv2d
from nasviz.dynamic.linear import DynamicLinear
from nasviz.dynamic.norm import DynamicBatchNorm2d  # noqa: F401  (registers the norm twins)
from nasviz.hparam import Hparam


def _conv_bn(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)
    )


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 conv+BN, residual add (a 1x1 stride-2 conv+BN shortcut when
    the shape changes).
    """

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1, self.bn1 = _conv_bn(cin, cout, 3, stride)
        self.conv2, self.bn2 = _conv_bn(cout, cout, 3)
        self.shortcut = nn.Identity() if stride == 1 and cin == cout else _conv_bn(cin, cout, 1, 2)

    @override
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(y)) + self.shortcut(x))


class InvertedResidual(nn.Module):
    """MobileNetV2-style block: 1x1 expand, 3x3 depthwise, 1x1 project (each with BN), residual
    add.
    """

    def __init__(self, channels: int, expand: int) -> None:
        super().__init__()
        hidden = channels * expand
        self.expand, self.bn = _conv_bn(channels, hidden, 1)
        self.depthwise, self.bn_dw = _conv_bn(hidden, hidden, 3, groups=hidden)
        self.project, self.bn_out = _conv_bn(hidden, channels, 1)

    @override
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn(self.expand(x)))
        y = torch.relu(self.bn_dw(self.depthwise(y)))
        return x + self.bn_out(self.project(y))


class SmallResNet(nn.Module):
    """The benchmark's CNN: stem, two basic blocks (the second strided), an inverted residual, a
    two-layer head.
    """

    def __init__(self, width: int = 32, classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(*_conv_bn(3, width, 3), nn.ReLU())
        self.block1 = BasicBlock(width, width)
        self.block2 = BasicBlock(width, 2 * width, stride=2)
        self.inverted = InvertedResidual(2 * width, expand=2)
        self.fc1 = nn.Linear(2 * width, 2 * width)
        self.fc2 = nn.Linear(2 * width, classes)

    @override
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.inverted(self.block2(self.block1(self.stem(x))))
        return self.fc2(torch.relu(self.fc1(x.mean(dim=(2, 3)))))


def convert_by_hand(model: SmallResNet) -> list[Hparam]:
    """Every Conv2d/BatchNorm2d/Linear becomes dynamic; one hparam per non-residual width."""
    for module in list(model.modules()):
        cls = dynamic_class_for(module)
        if cls is not None and not isinstance(module, DynamicModule):
            cls.convert(module)  # in place: the module keeps its place in the model
    groups: list[list[tuple[nn.Module, str]]] = []
    for block in (model.block1, model.block2):
        groups.append(
            [
                (block.conv1, "out_channels"),
                (block.bn1, "num_features"),
                (block.conv2, "in_channels"),
            ]
        )
    inv = model.inverted
    groups.append(
        [
            (inv.expand, "out_channels"),
            (inv.bn, "num_features"),
            (inv.depthwise, "in_channels"),  # the depthwise conv's out_channels follow
            (inv.bn_dw, "num_features"),
            (inv.project, "in_channels"),
        ]
    )
    groups.append([(model.fc1, "out_features"), (model.fc2, "in_features")])
    hparams = []
    for members in groups:
        producer, attr = members[0]
        full = producer.original_size(attr)
        hp = Hparam([full // 2, full], name=f"{type(producer).__name__}.{attr}")
        for module, member_attr in members:
            module.set_dim(member_attr, hp)
        hparams.append(hp)
    return hparams


def export_model(model: nn.Module, keep: tuple[type, ...] = ()) -> nn.Module:
    """A copy of ``model`` with every dynamic layer, except instances of ``keep``, replaced by its
    plain export.
    """
    out = copy.deepcopy(model)
    for name, module in list(out.named_modules()):
        if isinstance(module, DynamicModule) and not isinstance(module, keep):
            parent_name, _, child = name.rpartition(".")
            setattr(out.get_submodule(parent_name), child, module.export())
    return out


def time_interleaved(
    fns: dict[str, Callable[[], object]], repeat: int, number: int
) -> dict[str, float]:
    """Median seconds per call of each function; one timing of each in turn, ``repeat`` times."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for fn in fns.values():  # warm up caches and allocators
        for _ in range(number):
            fn()
    for _ in range(repeat):
        for name, fn in fns.items():
            start = time.perf_counter()
            for _ in range(number):
                fn()
            times[name].append((time.perf_counter() - start) / number)
    return {name: statistics.median(t) for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=21)
    parser.add_argument("--number", type=int, default=10)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    plain = SmallResNet().eval()
    converted = copy.deepcopy(plain)
    hparams = convert_by_hand(converted)
    x = torch.randn(args.batch, 3, 32, 32)

    with torch.no_grad():
        if not torch.equal(converted(x), plain(x)):
            msg = "the converted model at full size differs from the plain model"
            raise SystemExit(msg)
        full_convs_only = export_model(converted, keep=(DynamicConv2d, DynamicLinear))
        full = time_interleaved(
            {
                "plain": lambda: plain(x),
                "converted": lambda: converted(x),
                "convs_only": lambda: full_convs_only(x),
            },
            args.repeat,
            args.number,
        )
        for hp in hparams:
            hp.active = hp.min
        exported = export_model(converted)
        convs_only = export_model(converted, keep=(DynamicConv2d, DynamicLinear))
        for model in (exported, convs_only):
            if not torch.equal(model(x), converted(x)):
                msg = "an exported subnet differs from the dynamic subnet"
                raise SystemExit(msg)
        sub = time_interleaved(
            {
                "exported": lambda: exported(x),
                "converted": lambda: converted(x),
                "convs_only": lambda: convs_only(x),
            },
            args.repeat,
            args.number,
        )

    params = (
        sum(p.numel() for p in plain.parameters()),
        sum(p.numel() for p in exported.parameters()),
    )
    print(f"model: SmallResNet, input {tuple(x.shape)}, 1 thread, torch {torch.__version__}")
    print(
        f"subnet: {[hp.active for hp in hparams]} of {[hp.original for hp in hparams]} "
        f"({params[1]} of {params[0]} parameters)"
    )
    print(f"plain {full['plain'] * 1e3:.3f} ms, converted full {full['converted'] * 1e3:.3f} ms")
    print(
        f"exported subnet {sub['exported'] * 1e3:.3f} ms, converted subnet "
        f"{sub['converted'] * 1e3:.3f} ms, dynamic convs/linears only "
        f"{sub['convs_only'] * 1e3:.3f} ms"
    )
    print(f"full-size overhead: {full['converted'] / full['plain']:.3f}x (target <= 1.05x)")
    print(
        "full-size overhead, convs/linears only (norms plain): "
        f"{full['convs_only'] / full['plain']:.3f}x"
    )
    print(f"subnet overhead: {sub['converted'] / sub['exported']:.3f}x (target <= 1.10x)")
    print(
        "subnet overhead, convs/linears only (norms exported): "
        f"{sub['convs_only'] / sub['exported']:.3f}x"
    )


if __name__ == "__main__":
    main()
