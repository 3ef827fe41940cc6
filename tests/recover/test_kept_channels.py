"""Feature maps align channel for channel through the kept-channel map."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import nasviz as nv
from nasviz.demo import demo_config
from nasviz.errors import NasvizError
from nasviz.extension import ActivationMapGrabber
from nasviz.models import DenseNetLike, DigitsCNN
from nasviz.recover import feature_loss, kept_channels, lineage

pytestmark = pytest.mark.usefixtures("one_thread")

X = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))


def _random_bn(model: nn.Module, seed: int = 1) -> None:
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)


@pytest.fixture
def converted() -> nn.Module:
    torch.manual_seed(0)
    model = DigitsCNN(width=16)
    _random_bn(model)
    model.eval()
    return nv.convert(model, mode=[("fastnas", demo_config(4))], dummy_input=X)


def _feats(model: nn.Module, names: list[str]) -> dict[str, torch.Tensor]:
    with torch.no_grad(), ActivationMapGrabber(model.eval(), names) as grab:
        return grab(X)[1]


def test_lineage_kinds(converted: nn.Module) -> None:
    assert lineage(converted).kind == "searchable"
    assert lineage(nv.export(converted)).kind == "exported"
    assert lineage(DigitsCNN()).kind == "foreign"


@pytest.mark.parametrize("teacher_kind", ["converted", "exported"])
def test_exported_student_matches_teacher_on_kept_channels(
    converted: nn.Module, teacher_kind: str
) -> None:
    teacher = copy.deepcopy(converted) if teacher_kind == "converted" else nv.export(converted)
    # only the inverted block's hidden width shrinks: its expand and depthwise outputs are
    # computed from unpruned inputs, so the kept channels must agree exactly
    nv.select(converted, {"ir_expand.0.out_channels": 12})
    student = nv.export(converted)
    names = ["ir_expand.1", "ir_depthwise.1"]
    kept = kept_channels(student, teacher, names)
    for name in names:
        dim, index = kept[name]
        assert dim == 1 and index is not None
        assert torch.equal(index, torch.arange(12))
    s, t = _feats(student, names), _feats(teacher, names)
    for name in names:
        assert s[name].shape[1] == 12 and t[name].shape[1] == 32
        assert torch.allclose(s[name], t[name][:, kept[name][1]], atol=1e-6)
    assert float(feature_loss(s, t, kept)) < 1e-10
    # the teacher's selection is untouched by building the map
    if teacher_kind == "converted":
        assert nv.get_subnet_config(teacher)["ir_expand.0.out_channels"] == 32


def test_feature_loss_is_positive_where_channels_do_not_align(converted: nn.Module) -> None:
    teacher = copy.deepcopy(converted)
    nv.select(converted, {"ir_expand.0.out_channels": 12})
    student = nv.export(converted)
    s, t = _feats(student, ["ir_expand.1"]), _feats(teacher, ["ir_expand.1"])
    shifted = {"ir_expand.1": (1, torch.arange(1, 13))}  # a wrong map must not give 0
    assert float(feature_loss(s, t, shifted)) > 1e-3


def test_auto_picks_the_pruned_norm_layers(converted: nn.Module) -> None:
    teacher = copy.deepcopy(converted)
    nv.sample(converted, "min")
    kept = kept_channels(nv.export(converted), teacher, "auto")
    assert set(kept) == {
        "stem.1", "res_conv1.1", "res_conv2.1", "ir_expand.1", "ir_depthwise.1", "ir_project.1"
    }  # fmt: skip


def test_searchable_student_works_too(converted: nn.Module) -> None:
    teacher = copy.deepcopy(converted)
    nv.select(converted, {"ir_expand.0.out_channels": 8})
    kept = kept_channels(converted, teacher, ["ir_depthwise.1"])
    s, t = _feats(converted, ["ir_depthwise.1"]), _feats(teacher, ["ir_depthwise.1"])
    assert float(feature_loss(s, t, kept)) < 1e-10


def test_original_teacher_is_refused_with_the_fix(converted: nn.Module) -> None:
    original = DigitsCNN(width=16)
    with pytest.raises(NasvizError, match=r"original, unconverted model.*not recorded.*deepcopy"):
        kept_channels(nv.export(converted), original, "auto")


def test_foreign_student_and_narrow_teacher_are_refused(converted: nn.Module) -> None:
    with pytest.raises(NasvizError, match=r"student .*carries no nasviz record"):
        kept_channels(DigitsCNN(width=16), converted, "auto")
    nv.sample(converted, "min")
    narrow = nv.export(converted)
    with pytest.raises(NasvizError, match="export of a subnet"):
        kept_channels(narrow, narrow, "auto")


def test_unknown_module_name(converted: nn.Module) -> None:
    teacher = copy.deepcopy(converted)
    with pytest.raises(NasvizError, match=r"'stem.9' is not a module of the student.*stem"):
        kept_channels(nv.export(converted), teacher, ["stem.9"])


def test_concatenation_map_from_a_converted_teacher() -> None:
    torch.manual_seed(0)
    x = torch.rand(2, 3, 16, 16)
    model = DenseNetLike(block_config=(2,), init_channels=8).eval()
    _random_bn(model)
    nv.convert(model, mode=[("fastnas", demo_config(4))], dummy_input=x)
    teacher = copy.deepcopy(model)
    nv.select(model, {"stem.out_channels": 4})
    student = nv.export(model)
    # the second dense layer's norm sees cat([stem output, first layer's new channels]): the
    # stem keeps 4 of its 8, the new channels all 8 -> teacher channels 0..3 and 8..15
    name = "features.0.1.norm1"
    kept = kept_channels(student, teacher, [name])
    index = kept[name][1]
    assert index is not None
    assert index.tolist() == [0, 1, 2, 3, *range(8, 16)]
    with torch.no_grad(), ActivationMapGrabber(student, [name]) as gs:
        s = gs(x)[1][name]
    with torch.no_grad(), ActivationMapGrabber(teacher, [name]) as gt:
        t = gt(x)[1][name]
    # the stem part is computed from the unpruned image: it agrees exactly
    assert torch.allclose(s[:, :4], t[:, index[:4]], atol=1e-6)
    with pytest.raises(NasvizError, match="not one channel group's prefix"):
        kept_channels(student, nv.export(copy.deepcopy(teacher)), [name])
