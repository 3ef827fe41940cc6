"""Tests for nasviz.extension: hook handles, grabbers, extenders, stumps, compare_activations."""

from __future__ import annotations

import gc

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from nasviz.errors import NasvizError
from nasviz.extension import (
    ActivationMapGrabber,
    ExtensionNameError,
    HooksHandle,
    ModelExtender,
    ModelStump,
    ModuleIdError,
    compare_activations,
)

# ----------------------------------------------------------------------------- tiny models


def _linear(weight: list[list[float]], bias: list[float] | None = None) -> nn.Linear:
    w = torch.tensor(weight)
    layer = nn.Linear(w.shape[1], w.shape[0], bias=bias is not None)
    with torch.no_grad():
        layer.weight.copy_(w)
        if bias is not None:
            layer.bias.copy_(torch.tensor(bias))
    return layer


class Counter(nn.Module):
    """Identity that counts its calls; raises if ``boom`` is set."""

    def __init__(self, boom: bool = False) -> None:
        super().__init__()
        self.calls = 0
        self.boom = boom

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.boom:
            raise RuntimeError("later layer ran")
        return x


class Chain(nn.Module):
    """fc1 = diag(1, 2); relu; fc2 = [1, 1]; tail counts calls. [1, 2] -> [1, 4] -> 5."""

    def __init__(self, boom_tail: bool = False) -> None:
        super().__init__()
        self.fc1 = _linear([[1.0, 0.0], [0.0, 2.0]], [0.0, 0.0])
        self.relu = nn.ReLU()
        self.fc2 = _linear([[1.0, 1.0]], [0.0])
        self.tail = Counter(boom=boom_tail)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.tail(self.fc2(self.relu(self.fc1(x))))


class Twice(nn.Module):
    """The same fc (weight 2 I) runs twice: x -> 2x -> 4x."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = _linear([[2.0, 0.0], [0.0, 2.0]])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.fc(x))


class Branch(nn.Module):
    """``skip`` runs only when the input sum is negative."""

    def __init__(self) -> None:
        super().__init__()
        self.main = _linear([[1.0, 0.0], [0.0, 1.0]])
        self.skip = _linear([[-1.0, 0.0], [0.0, -1.0]])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.skip(x) if x.sum() < 0 else self.main(x)


class DropChain(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.drop = nn.Dropout(0.5)
        self.fc = _linear([[1.0, 1.0, 1.0, 1.0]])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.drop(x))


X = torch.tensor([[1.0, 2.0], [-1.0, 1.0]])  # fc1 -> [[1, 4], [-1, 2]], relu -> [[1, 4], [0, 2]]


def hook_count(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) for m in model.modules())


# ----------------------------------------------------------------------------- HooksHandle


def test_hooks_handle_is_abstract() -> None:
    with pytest.raises(TypeError):
        HooksHandle(Chain())  # type: ignore[abstract]


def test_get_module_by_id_and_registration() -> None:
    model = Chain()
    g = ActivationMapGrabber(model, ["fc1"])
    assert g.wrapped_model is model
    assert g.get_module_by_id("fc2") is model.fc2
    assert g.get_module_by_id("") is model
    assert g.registered_submodules == ["fc1"]
    g.register_submodule("relu")
    g.register_submodule("relu")  # idempotent
    assert g.registered_submodules == ["fc1", "relu"]
    assert list(g.hook_handles) == ["fc1", "relu"]
    assert hook_count(model) == 2
    g.unregister_submodule("fc1")
    assert g.registered_submodules == ["relu"]
    assert len(model.fc1._forward_hooks) == 0
    assert len(model.relu._forward_hooks) == 1
    with pytest.raises(ModuleIdError, match=r"not registered with this handle.*'relu'"):
        g.unregister_submodule("rel")


def test_unknown_id_lists_closest_names_and_is_keyerror() -> None:
    model = Chain()
    g = ActivationMapGrabber(model, [])
    with pytest.raises(ModuleIdError, match=r"'fc3' is not a sub-module of Chain.*'fc1'") as info:
        g.get_module_by_id("fc3")
    assert isinstance(info.value, NasvizError)
    assert isinstance(info.value, KeyError)
    assert isinstance(info.value, ValueError)
    assert "'fc2'" in str(info.value)
    assert not str(info.value).startswith('"')  # plain message, not KeyError-quoted
    with pytest.raises(KeyError):
        g.register_submodule("nope")
    # a failing constructor leaves no hook behind
    with pytest.raises(ModuleIdError):
        ActivationMapGrabber(model, ["fc1", "fc9"])
    gc.collect()
    assert hook_count(model) == 0


def test_not_a_module_is_refused() -> None:
    with pytest.raises(NasvizError, match=r"must be a torch\.nn\.Module"):
        ActivationMapGrabber("model", [])  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- grabber


def test_grabber_returns_main_and_intermediate_outputs() -> None:
    g = ActivationMapGrabber(Chain(), ["fc1", "relu", "fc2"])
    out, acts = g(X)
    torch.testing.assert_close(out, torch.tensor([[5.0], [2.0]]))
    assert list(acts) == ["fc1", "relu", "fc2"]
    torch.testing.assert_close(acts["fc1"], torch.tensor([[1.0, 4.0], [-1.0, 2.0]]))
    torch.testing.assert_close(acts["relu"], torch.tensor([[1.0, 4.0], [0.0, 2.0]]))
    assert acts["fc2"] is out  # the tail is an identity: returned as is, not copied


def test_storage_is_fresh_each_call_and_direct_calls_do_not_record() -> None:
    model = Branch()
    g = ActivationMapGrabber(model, ["main", "skip"])
    _, acts = g(torch.tensor([[-1.0, -2.0]]))
    assert list(acts) == ["skip"]
    _, acts = g(torch.tensor([[1.0, 2.0]]))
    assert list(acts) == ["main"]  # the earlier 'skip' output did not leak
    torch.testing.assert_close(acts["main"], torch.tensor([[1.0, 2.0]]))
    model(torch.tensor([[-3.0, -3.0]]))  # a direct call while hooked records nothing
    assert g._intermediate_outs == {}
    _, acts = g(torch.tensor([[5.0, 5.0]]))
    assert list(acts) == ["main"]


def test_failing_forward_resets_state() -> None:
    model = Chain(boom_tail=True)
    g = ActivationMapGrabber(model, ["fc1"])
    with pytest.raises(RuntimeError, match="later layer ran"):
        g(X)
    assert g._recording is False
    assert g._intermediate_outs == {}
    model.tail.boom = False
    _, acts = g(2 * X)
    torch.testing.assert_close(acts["fc1"], torch.tensor([[2.0, 8.0], [-2.0, 4.0]]))


def test_capture_last_and_all_on_a_module_called_twice() -> None:
    x = torch.tensor([[1.0, 3.0]])
    out, last = ActivationMapGrabber(Twice(), ["fc"])(x)
    torch.testing.assert_close(last["fc"], torch.tensor([[4.0, 12.0]]))
    out, all_ = ActivationMapGrabber(Twice(), ["fc"], capture="all")(x)
    assert isinstance(all_["fc"], list)
    assert len(all_["fc"]) == 2
    torch.testing.assert_close(all_["fc"][0], torch.tensor([[2.0, 6.0]]))
    torch.testing.assert_close(all_["fc"][1], out)
    with pytest.raises(NasvizError, match="capture must be 'last' or 'all'"):
        ActivationMapGrabber(Twice(), ["fc"], capture="first")  # type: ignore[arg-type]


def test_no_detach_by_default_and_detach_option() -> None:
    model = Chain()
    _, acts = ActivationMapGrabber(model, ["fc1"])(X)
    assert acts["fc1"].requires_grad
    acts["fc1"].sum().backward()
    assert model.fc1.weight.grad is not None
    _, acts = ActivationMapGrabber(model, ["fc1"], capture="all", detach=True)(X)
    assert not acts["fc1"][0].requires_grad
    lstm = nn.LSTM(2, 2, batch_first=True)  # output (out, (h, c)): nested tuples are detached
    _, acts = ActivationMapGrabber(lstm, [""], detach=True)(torch.ones(1, 3, 2))
    out, (h, c) = acts[""]
    assert not (out.requires_grad or h.requires_grad or c.requires_grad)


def test_train_and_eval_mode() -> None:
    torch.manual_seed(0)
    model = DropChain()
    g = ActivationMapGrabber(model, ["drop"])
    x = torch.ones(8, 4)
    g.train()
    assert model.training
    assert model.drop.training
    out, acts = g(x)
    dropped = acts["drop"]
    assert set(dropped.unique().tolist()) <= {0.0, 2.0}
    assert (dropped == 0).any()
    torch.testing.assert_close(out, dropped.sum(dim=1, keepdim=True))  # what the next layer saw
    g.eval()
    assert not model.training
    out, acts = g(x)
    torch.testing.assert_close(acts["drop"], x)
    torch.testing.assert_close(out, torch.full((8, 1), 4.0))


def test_repr_names_registrations() -> None:
    g = ActivationMapGrabber(Twice(), ["fc"], capture="all")
    text = repr(g)
    assert text.startswith("ActivationMapGrabber(")
    assert "module_ids=['fc'], hooks_attached=True, capture='all', detach=False" in text
    g.remove_hooks()
    assert "hooks_attached=False" in repr(g)


# ----------------------------------------------------------------------------- hook life cycle


def test_hooks_removed_on_delete() -> None:
    model = Chain()
    g = ActivationMapGrabber(model, ["fc1", "fc2"])
    assert hook_count(model) == 2
    del g  # no reference cycle through the hooks: freed (and unhooked) right away
    assert hook_count(model) == 0
    ext = ModelExtender(model, {"relu": {"probe": nn.Identity()}})
    stump = ModelStump(model, "fc1")
    assert hook_count(model) == 2
    del ext, stump
    gc.collect()
    assert hook_count(model) == 0


def test_context_manager_nested_and_on_exception() -> None:
    model = Chain()
    with ActivationMapGrabber(model, ["fc1"]) as outer:
        with ActivationMapGrabber(model, ["fc1", "fc2"]) as inner:
            assert hook_count(model) == 3
            _, acts_in = inner(X)
            _, acts_out = outer(X)
            assert list(acts_in) == ["fc1", "fc2"]
            assert list(acts_out) == ["fc1"]
        assert hook_count(model) == 1
    assert hook_count(model) == 0

    def fail_inside() -> None:
        with ActivationMapGrabber(model, ["relu"]):
            assert hook_count(model) == 1
            raise RuntimeError("inside")

    with pytest.raises(RuntimeError, match="inside"):
        fail_inside()
    assert hook_count(model) == 0
    boom = Chain(boom_tail=True)
    with (
        pytest.raises(RuntimeError, match="later layer"),
        ModelExtender(boom, {"fc1": {"e": nn.Identity()}}) as ext,
    ):
        ext(X)
    assert hook_count(boom) == 0


def test_remove_hooks_then_forward_refuses_until_reattached() -> None:
    model = Chain()
    g = ActivationMapGrabber(model, ["fc1"])
    g.remove_hooks()
    assert hook_count(model) == 0
    assert g.hook_handles == {}
    assert g.registered_submodules == ["fc1"]
    assert not g.hooks_attached
    with pytest.raises(NasvizError, match=r"hooks were removed.*attach_hooks"):
        g(X)
    g.register_submodule("fc2")  # recorded, not hooked while detached
    assert hook_count(model) == 0
    g.attach_hooks()
    g.attach_hooks()  # idempotent
    assert hook_count(model) == 2
    _, acts = g(X)
    assert list(acts) == ["fc1", "fc2"]
    with g:  # a handle can be reused as a context manager
        assert hook_count(model) == 2
    assert hook_count(model) == 0


# ----------------------------------------------------------------------------- stump


def test_stump_returns_head_output_and_stops_there() -> None:
    model = Chain(boom_tail=True)  # the tail raises if it ever runs
    stump = ModelStump(model, "relu")
    assert stump.stump_head == "relu"
    assert stump.registered_submodules == ["relu"]
    torch.testing.assert_close(stump(X), torch.tensor([[1.0, 4.0], [0.0, 2.0]]))
    model.tail.boom = False
    stump(X)
    assert model.tail.calls == 0  # never reached
    model(X)  # the model itself still runs to the end while the stump is attached
    assert model.tail.calls == 1
    stump.remove_hooks()
    assert hook_count(model) == 0


def test_stump_from_grabber_is_in_eval_mode() -> None:
    model = Chain()
    g = ActivationMapGrabber(model, ["fc1"]).train()
    stump = g.stump("fc2")
    assert isinstance(stump, ModelStump)
    assert not stump.training
    assert model.training  # the shared model keeps its flags (issue #15)
    torch.testing.assert_close(stump(X), torch.tensor([[5.0], [2.0]]))
    _, acts = g(X)  # the stump's hook does not interrupt the grabber
    assert list(acts) == ["fc1"]


def test_stump_errors() -> None:
    stump = ModelStump(Branch(), "skip")
    with pytest.raises(NasvizError, match="stump head 'skip' did not run"):
        stump(torch.tensor([[1.0, 1.0]]))
    torch.testing.assert_close(stump(torch.tensor([[-1.0, 0.0]])), torch.tensor([[1.0, 0.0]]))
    with pytest.raises(NasvizError, match="one head"):
        stump.register_submodule("main")
    with pytest.raises(ModuleIdError, match="'skip'"):
        ModelStump(Branch(), "skp")


@settings(max_examples=25, deadline=None)
@given(st.lists(st.floats(-10, 10, width=32), min_size=2, max_size=2))
def test_stump_equals_grabbed_activation(values: list[float]) -> None:
    model = Chain()
    x = torch.tensor([values])
    with ActivationMapGrabber(model, ["relu"]) as g, ModelStump(model, "relu") as stump:
        _, acts = g(x)
        torch.testing.assert_close(stump(x), acts["relu"])
        torch.testing.assert_close(acts["relu"], torch.relu(x * torch.tensor([1.0, 2.0])))
    assert hook_count(model) == 0


# ----------------------------------------------------------------------------- extender


def test_extender_outputs_and_properties() -> None:
    model = Chain()
    double = _linear([[2.0, 0.0], [0.0, 2.0]])
    sum_ = _linear([[1.0, 1.0]])
    ext = ModelExtender(model, {"relu": {"double": double, "sum": sum_}})
    assert ext.wrapped_model is model
    assert ext.return_orig_out is True
    assert ext.extension_names == ["double", "sum"]
    assert ext.name_registrations == {"relu": ["double", "sum"]}
    assert ext.extensions == {"relu": {"double": double, "sum": sum_}}
    assert isinstance(ext.extension_models, nn.ModuleDict)
    assert ext.extension_models["sum"] is sum_
    assert list(ext.hook_handles) == ["relu"]
    assert ext.registered_submodules == ["relu"]
    out, ext_outs = ext(X)
    torch.testing.assert_close(out, torch.tensor([[5.0], [2.0]]))
    torch.testing.assert_close(ext_outs["double"], torch.tensor([[2.0, 8.0], [0.0, 4.0]]))
    torch.testing.assert_close(ext_outs["sum"], torch.tensor([[5.0], [2.0]]))
    assert "return_orig_out=True" in repr(ext)

    ext.register_extension("first", "fc1", nn.Identity())
    assert ext.name_registrations == {"relu": ["double", "sum"], "fc1": ["first"]}
    ext.return_orig_out = False
    only = ext(X)
    assert isinstance(only, dict)
    torch.testing.assert_close(only["first"], torch.tensor([[1.0, 4.0], [-1.0, 2.0]]))

    ext.unregister_extension("first")
    assert "fc1" not in ext.registered_submodules
    assert len(model.fc1._forward_hooks) == 0
    ext.unregister_extension("double")
    assert ext.extensions == {"relu": {"sum": sum_}}
    assert ext.registered_submodules == ["relu"]  # still feeds 'sum'
    ext.unregister_extension("sum")
    assert ext.extension_names == []
    assert ext.name_registrations == {}
    assert hook_count(model) == 0


def test_extender_return_orig_out_false_in_constructor() -> None:
    ext = ModelExtender(Chain(), {"fc2": {"neg": _linear([[-1.0]])}}, return_orig_out=False)
    outs = ext(X)
    assert list(outs) == ["neg"]
    torch.testing.assert_close(outs["neg"], torch.tensor([[-5.0], [-2.0]]))


def test_extension_names_are_unique_and_valid() -> None:
    model = Chain()
    ext = ModelExtender(model, {"fc1": {"a": nn.Identity()}})
    with pytest.raises(ValueError, match=r"'a' is already registered.*'fc1'"):
        ext.register_extension("a", "fc2", nn.Identity())
    with pytest.raises(NasvizError, match="'b' is already registered"):
        ext.register_extensions({"fc2": {"b": nn.Identity()}, "relu": {"b": nn.Identity()}})
    assert ext.extension_names == ["a"]  # all-or-nothing
    assert ext.registered_submodules == ["fc1"]
    with pytest.raises(ValueError, match="already registered"):
        ModelExtender(model, {"fc1": {"x": nn.Identity()}, "fc2": {"x": nn.Identity()}})
    with pytest.raises(NasvizError, match=r"without '\.'"):
        ext.register_extension("a.b", "fc1", nn.Identity())
    with pytest.raises(NasvizError, match=r"clashes with an nn\.ModuleDict attribute"):
        ext.register_extension("training", "fc1", nn.Identity())
    ext.register_extension("eval", "fc1", nn.Identity())  # method names are fine as keys
    ext.train()
    assert ext.extension_models["eval"].training
    ext.unregister_extension("eval")
    with pytest.raises(NasvizError, match=r"must be an nn\.Module"):
        ext.register_extension("c", "fc1", lambda t: t)  # type: ignore[arg-type]
    with pytest.raises(ModuleIdError, match="'fc1'"):
        ext.register_extension("c", "fc", nn.Identity())
    with pytest.raises(ExtensionNameError, match=r"'aa' is not registered.*'a'") as info:
        ext.unregister_extension("aa")
    assert isinstance(info.value, KeyError)
    with pytest.raises(NasvizError, match="feeds extensions"):
        ext.unregister_submodule("fc1")
    gc.collect()
    assert hook_count(model) == 1


def test_extension_params_are_module_params_and_move_with_to() -> None:
    probe, model = nn.Linear(2, 3), Chain()
    ext = ModelExtender(model, {"relu": {"probe": probe}})
    params = {id(p) for p in ext.parameters()}
    assert id(probe.weight) in params
    assert id(model.fc1.weight) in params
    assert "extension_models.probe.weight" in ext.state_dict()
    ext.to(torch.float64)
    assert probe.weight.dtype == torch.float64
    assert model.fc1.weight.dtype == torch.float64
    _, outs = ext(X.double())
    assert outs["probe"].dtype == torch.float64


def test_extender_trains_through_activations() -> None:
    torch.manual_seed(0)
    model = Chain()
    probe = nn.Linear(2, 1)
    ext = ModelExtender(model, {"fc1": {"probe": probe}})
    _, outs = ext(X)
    outs["probe"].sum().backward()
    assert probe.weight.grad is not None
    assert model.fc1.weight.grad is not None  # not detached: the graph reaches the model


def test_extender_capture_all() -> None:
    ext = ModelExtender(Twice(), {"fc": {"sum": _linear([[1.0, 1.0]])}}, capture="all")
    _, outs = ext(torch.tensor([[1.0, 3.0]]))
    assert len(outs["sum"]) == 2
    torch.testing.assert_close(outs["sum"][0], torch.tensor([[8.0]]))
    torch.testing.assert_close(outs["sum"][1], torch.tensor([[16.0]]))


# ----------------------------------------------------------------------------- compare


class Probe(nn.Module):
    """Records grad mode and training flag on each call."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[bool, bool]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append((torch.is_grad_enabled(), self.training))
        return x


def test_compare_identical_and_scaled_models() -> None:
    a = Chain()
    df = compare_activations(a, Chain(), X, ["fc1", "relu", "fc2"])
    assert list(df.columns) == [
        "module_id",
        "shape_a",
        "shape_b",
        "compared",
        "rel_l2",
        "cosine",
        "max_abs_diff",
    ]
    assert df["module_id"].tolist() == ["fc1", "relu", "fc2"]
    assert df["shape_a"].tolist() == [(2, 2), (2, 2), (2, 1)]
    assert (df["compared"] == "full tensor").all()
    assert df["rel_l2"].tolist() == [0.0, 0.0, 0.0]
    assert df["cosine"].tolist() == pytest.approx([1.0, 1.0, 1.0])
    b = Chain()
    with torch.no_grad():
        b.fc1.weight.mul_(2.0)  # b's activations are exactly twice a's
    df = compare_activations(a, b, (X,), ["fc1", "fc2"])
    assert df["rel_l2"].tolist() == pytest.approx([1.0, 1.0])
    assert df["cosine"].tolist() == pytest.approx([1.0, 1.0])
    assert df["max_abs_diff"].tolist() == pytest.approx([4.0, 5.0])  # |8-4|, |10-5|


def test_compare_known_drift() -> None:
    a, b = Chain(), Chain()
    with torch.no_grad():
        b.fc2.weight.copy_(torch.tensor([[1.0, 0.0]]))  # fc2: [5, 2] -> [1, 0]
    row = compare_activations(a, b, X, ["fc2"]).iloc[0]
    assert row["rel_l2"] == pytest.approx((16 + 4) ** 0.5 / 29**0.5)
    assert row["cosine"] == pytest.approx(5 / 29**0.5)


def test_compare_pruned_channels_uses_channel_mean() -> None:
    wide = nn.Sequential(_linear([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]))  # x -> [x0, x1, x0+x1]
    narrow = nn.Sequential(_linear([[2.0, 0.0], [0.0, 2.0]]))  # x -> [2 x0, 2 x1]
    x = torch.tensor([[1.0, 2.0], [3.0, -1.0]])
    row = compare_activations(wide, narrow, x, ["0"]).iloc[0]
    assert row["shape_a"] == (2, 3)
    assert row["shape_b"] == (2, 2)
    assert row["compared"] == "channel mean (mean over dim 1)"
    # channel means: wide [2, 4/3], narrow [3, 2]
    ma, mb = torch.tensor([2.0, 4 / 3]), torch.tensor([3.0, 2.0])
    assert row["rel_l2"] == pytest.approx(((ma - mb).norm() / ma.norm()).item())
    assert row["cosine"] == pytest.approx((ma @ mb / (ma.norm() * mb.norm())).item())

    torch.manual_seed(0)
    conv_a, conv_b = nn.Conv2d(1, 8, 3, padding=1), nn.Conv2d(1, 4, 3, padding=1)
    state_a = conv_a.state_dict()  # b keeps channels 0..3 of a
    conv_b.load_state_dict({"weight": state_a["weight"][:4], "bias": state_a["bias"][:4]})
    img = torch.randn(2, 1, 5, 5)
    row = compare_activations(conv_a, conv_b, img, [""]).iloc[0]
    assert row["compared"] == "channel mean (mean over dim 1)"
    expected = (conv_a(img).mean(1) - conv_b(img).mean(1)).norm() / conv_a(img).mean(1).norm()
    assert row["rel_l2"] == pytest.approx(expected.item(), rel=1e-5)

    tokens_a, tokens_b = nn.Linear(4, 6), nn.Linear(4, 3)
    seq = torch.randn(2, 5, 4)
    row = compare_activations(tokens_a, tokens_b, seq, [""], channel_dim=-1).iloc[0]
    assert row["compared"] == "channel mean (mean over dim 2)"
    row = compare_activations(tokens_a, tokens_b, seq, [""]).iloc[0]
    assert row["compared"].startswith("not compared")
    assert row["rel_l2"] != row["rel_l2"]  # NaN


def test_compare_runs_in_eval_no_grad_and_restores_flags() -> None:
    torch.manual_seed(0)
    a = nn.Sequential(nn.Dropout(0.5), Probe())
    b = nn.Sequential(nn.Dropout(0.5), Probe())
    a.train()
    b.train()
    b[0].eval()  # mixed flags are restored module by module
    df = compare_activations(a, b, torch.ones(16, 4), ["0", "1"])
    assert df["rel_l2"].tolist() == [0.0, 0.0]  # dropout off: in train mode they would differ
    assert a[1].seen == [(False, False)]
    assert b[1].seen == [(False, False)]
    assert [m.training for m in a.modules()] == [True, True, True]
    assert [m.training for m in b.modules()] == [True, False, True]
    assert hook_count(a) == hook_count(b) == 0


def test_compare_errors() -> None:
    with pytest.raises(NasvizError, match="'skip' did not run in model_a"):
        compare_activations(Branch(), Branch(), torch.ones(1, 2), ["skip"])
    with pytest.raises(ModuleIdError, match="'fc1'"):
        compare_activations(Chain(), Chain(), X, ["fc"])
    lstm = nn.LSTM(2, 2, batch_first=True)
    with pytest.raises(NasvizError, match="not tensors"):
        compare_activations(lstm, lstm, torch.ones(1, 3, 2), [""])
    zero = nn.Sequential(_linear([[0.0, 0.0]]))
    row = compare_activations(zero, zero, X, ["0"]).iloc[0]
    assert row["rel_l2"] == 0.0
    assert row["cosine"] != row["cosine"]  # NaN: cosine of zero vectors is undefined


# -- searchable and exported models ---------------------------------------------------------


def _searchable_digits() -> tuple[nn.Module, torch.Tensor]:
    import nasviz as nv
    from nasviz.demo import demo_config
    from nasviz.models import DigitsCNN

    torch.manual_seed(0)
    x = torch.rand(4, 1, 8, 8)
    model = nv.convert(DigitsCNN(width=16).eval(), mode=[("fastnas", demo_config())], dummy_input=x)
    return model, x


IDS = ["stem", "res_conv1", "ir_depthwise", "fc"]


def test_grabber_on_searchable_model_follows_select() -> None:
    import nasviz as nv

    model, x = _searchable_digits()
    with ActivationMapGrabber(model, IDS) as grab:
        out_full, acts_full = grab(x)
        assert acts_full["res_conv1"].shape[1] == 16
        nv.select(model, {"res_conv1.0.out_channels": 8})
        out_small, acts_small = grab(x)
    assert acts_small["res_conv1"].shape[1] == 8
    assert acts_small["stem"].shape == acts_full["stem"].shape
    torch.testing.assert_close(acts_small["stem"], acts_full["stem"])
    assert out_small.shape == out_full.shape
    assert all(hook_count(m) == 0 for m in model.modules())


def test_same_module_ids_work_on_the_exported_model() -> None:
    import nasviz as nv

    model, x = _searchable_digits()
    nv.select(model, {"res_conv1.0.out_channels": 8, "ir_expand.0.out_channels": 16})
    small = nv.export(model).eval()
    with ActivationMapGrabber(model, IDS) as g_dyn, ActivationMapGrabber(small, IDS) as g_exp:
        out_dyn, acts_dyn = g_dyn(x)
        out_exp, acts_exp = g_exp(x)
    torch.testing.assert_close(out_exp, out_dyn)
    for mid in IDS:
        torch.testing.assert_close(acts_exp[mid], acts_dyn[mid])
    table = compare_activations(model, small, x, IDS)
    assert (table["rel_l2"] < 1e-5).all()


def test_compare_full_vs_pruned_uses_channel_means_for_pruned_layers() -> None:
    import copy

    import nasviz as nv

    model, x = _searchable_digits()
    full = copy.deepcopy(model)
    nv.select(model, {"res_conv1.0.out_channels": 8})
    small = nv.export(model)
    table = compare_activations(full, small, x, ["stem", "res_conv1"]).set_index("module_id")
    assert table.loc["stem", "rel_l2"] < 1e-6
    assert table.loc["res_conv1", "shape_a"] != table.loc["res_conv1", "shape_b"]
    assert "mean" in str(table.loc["res_conv1", "compared"])


def test_stump_on_searchable_model_stops_early() -> None:
    model, x = _searchable_digits()
    grab = ActivationMapGrabber(model, ["res_conv1"])
    stump = grab.stump("res_conv1")
    calls: list[str] = []
    handle = model.fc.register_forward_hook(lambda *_: calls.append("fc"))
    try:
        out = stump(x)
    finally:
        handle.remove()
    assert out.shape[1] == 16
    assert calls == []
