"""Tests for nasviz.patch: exact patch/unpatch, hooks, replicas, BatchNorm re-calibration."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
from torch import nn

from nasviz.errors import NasvizError
from nasviz.patch import AutoNASPatchManager, PatchManager, prep_for_eval


class Net(nn.Module):
    """No parameters of its own (so a data-parallel replica of the root can run on CPU)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1)
        self.bn = nn.BatchNorm2d(4)
        self.head = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.bn(self.conv(x)).mean(dim=(2, 3)))


class Recorder(PatchManager):
    """Logs every hook call in the patch data."""

    def _default_patch_data(self) -> dict[str, Any]:
        return {"log": []}

    def _hook_pre_forward(self, *args: Any, **kwargs: Any) -> None:
        self.patch_data["log"].append(("pre", self.model, args, kwargs))

    def _hook_post_forward(self, output: Any, *args: Any, **kwargs: Any) -> None:
        self.patch_data["log"].append(("post", self.model, output))

    def _hook_post_train(self, mode: bool) -> None:
        self.patch_data["log"].append(("train", mode))

    def _hook_post_eval(self, forward_loop: Any = None) -> None:
        self.patch_data["log"].append(("eval", forward_loop))

    def _hook_before_sample(self) -> None:
        self.patch_data["log"].append(("reset",))


class NoSampling(AutoNASPatchManager):
    @property
    def sample_during_training(self) -> bool:
        return False


def _net(seed: int = 0) -> Net:
    torch.manual_seed(seed)
    return Net()


X = torch.linspace(-2, 2, 2 * 3 * 2 * 2).reshape(2, 3, 2, 2)


def _log(model: nn.Module) -> list[Any]:
    log: list[Any] = PatchManager.get_manager(model).patch_data["log"]
    return log


# ------------------------------------------------------------------------------------------
# patch / unpatch
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("manager_cls", [Recorder, AutoNASPatchManager])
def test_unpatch_restores_the_model_exactly(manager_cls: type[PatchManager]) -> None:
    model = _net().eval()
    attrs = dict(model.__dict__)
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    out = model(X)
    manager_cls(model).patch()
    assert PatchManager.is_patched(model)
    assert torch.equal(model(X), out)
    model.train()
    model.eval()
    manager_cls(model).unpatch()
    assert not PatchManager.is_patched(model)
    assert model.__dict__.keys() == attrs.keys()
    assert all(model.__dict__[k] is attrs[k] for k in attrs)
    assert model.state_dict().keys() == sd.keys()
    assert all(torch.equal(model.state_dict()[k], sd[k]) for k in sd)
    assert torch.equal(model(X), out)


def test_unpatch_puts_back_a_forward_the_user_set_on_the_instance() -> None:
    model = _net()

    def doubled(x: torch.Tensor) -> torch.Tensor:
        return 2 * Net.forward(model, x)

    model.forward = doubled  # type: ignore[method-assign]
    Recorder(model).patch()
    assert torch.equal(model(X), doubled(X))  # the shadowed instance forward is what runs
    assert _log(model)[0][0] == "pre"
    PatchManager(model).unpatch()
    assert model.__dict__["forward"] is doubled


def test_patching_touches_the_instance_not_the_class() -> None:
    model, other = _net(), _net()
    Recorder(model).patch()
    assert {"forward", "train", "_replicate_for_data_parallel"} <= model.__dict__.keys()
    assert Net.forward is Net.__dict__["forward"]
    assert "forward" not in other.__dict__
    other(X)
    assert not PatchManager.is_patched(other)


def test_patch_twice_and_unpatch_unpatched_raise() -> None:
    model = _net()
    Recorder(model).patch()
    with pytest.raises(NasvizError, match="this Net is already patched by Recorder; call"):
        AutoNASPatchManager(model).patch()
    PatchManager.get_manager(model).unpatch()
    with pytest.raises(NasvizError, match="this Net is not patched; convert it with a mode"):
        PatchManager(model).unpatch()
    with pytest.raises(NasvizError, match="is not patched"):
        PatchManager.get_manager(model)
    with pytest.raises(NasvizError, match=r"needs an nn.Module, got str"):
        PatchManager("model")


def test_patch_data_and_manager_class() -> None:
    model = _net()
    manager = Recorder(model)
    assert manager.patch_data_or_empty == {}
    with pytest.raises(NasvizError, match="not patched"):
        _ = manager.patch_data
    assert repr(manager) == "Recorder(Net, not patched)"
    manager.patch()
    assert repr(manager) == "Recorder(Net, patched)"
    got = PatchManager.get_manager(model)
    assert type(got) is Recorder and got.model is model
    assert got.patch_data is manager.patch_data_or_empty
    assert got.patch_data["manager_class"] is Recorder


# ------------------------------------------------------------------------------------------
# hooks
# ------------------------------------------------------------------------------------------


def test_forward_hooks_see_arguments_and_output() -> None:
    model = _net()
    Recorder(model).patch()
    out = model(X)
    log = _log(model)
    assert [e[0] for e in log] == ["pre", "post"]
    assert log[0][1] is model and log[0][2][0] is X and log[0][3] == {}
    assert log[1][2] is out


def test_post_eval_runs_only_on_train_to_eval() -> None:
    model = _net().train()
    Recorder(model).patch()
    assert model.eval() is model
    assert model.train(False) is model  # already in eval: no second post-eval
    model.train()
    model.train(False)
    assert _log(model) == [
        ("train", False),
        ("eval", None),
        ("train", False),
        ("train", True),
        ("train", False),
        ("eval", None),
    ]
    assert not model.training and not model.bn.training


def test_call_post_eval_and_reset_before_sample() -> None:
    model = _net()
    Recorder(model).patch()
    manager = PatchManager.get_manager(model)

    def loop(m: nn.Module) -> None:
        m(X)

    manager.call_post_eval(loop)
    manager.reset_before_sample()
    assert _log(model) == [("eval", loop), ("reset",)]


def test_data_parallel_replica_is_patched_and_its_hooks_see_the_replica() -> None:
    model = _net()
    Recorder(model).patch()
    replica = model._replicate_for_data_parallel()
    assert replica is not model
    assert PatchManager.is_patched(replica)
    assert replica.forward.__self__ is replica
    assert replica.train.__self__ is replica
    assert (
        PatchManager.get_manager(replica).patch_data
        is not PatchManager.get_manager(model).patch_data
    )
    assert torch.equal(replica(X), model(X))
    hooked_modules = [entry[1] for entry in _log(model) if entry[0] == "pre"]
    assert hooked_modules == [replica, model]  # replica shares the log list, hooks its own self
    PatchManager(replica).unpatch()
    assert PatchManager.is_patched(model)


def test_deepcopy_of_a_patched_model_is_patched_on_itself() -> None:
    model = _net()
    AutoNASPatchManager(model).patch()
    twin = copy.deepcopy(model)
    assert twin.forward.__self__ is twin  # type: ignore[attr-defined]
    assert PatchManager.get_manager(twin).model is twin
    assert torch.equal(twin(X), model(X))


# ------------------------------------------------------------------------------------------
# AutoNAS: sampling during training
# ------------------------------------------------------------------------------------------


def test_autonas_samples_before_each_training_forward_only() -> None:
    model = _net().train()
    manager = AutoNASPatchManager(model)
    manager.patch()
    assert manager.sample_during_training is True
    assert manager.sample_func is None
    model(X)  # no callback: nothing happens
    calls: list[nn.Module] = []
    manager.sample_func = calls.append
    model(X)
    model(X)
    model.eval()
    model(X)
    assert calls == [model, model]
    with pytest.raises(NasvizError, match="sample_func must be callable"):
        manager.sample_func = 3  # type: ignore[assignment]


def test_a_manager_without_sampling_never_samples() -> None:
    model = _net().train()
    manager = NoSampling(model)
    manager.patch()
    calls: list[nn.Module] = []
    manager.sample_func = calls.append
    model(X)
    assert calls == []


# ------------------------------------------------------------------------------------------
# BatchNorm re-calibration
# ------------------------------------------------------------------------------------------


def _bn_model() -> nn.Sequential:
    model = nn.Sequential(nn.BatchNorm2d(3))
    model.train()
    model(torch.randn(4, 3, 2, 2) * 5 + 3)  # some stale statistics
    return model


def test_recalibration_with_a_constant_input_gives_that_constant() -> None:
    torch.manual_seed(0)
    model = _bn_model()
    manager = AutoNASPatchManager(model)
    manager.patch()
    calls: list[nn.Module] = []
    manager.sample_func = calls.append

    def loop(m: nn.Module) -> None:
        assert m.training and not torch.is_grad_enabled()
        for _ in range(3):
            m(torch.full((2, 3, 4, 4), 2.5))

    assert prep_for_eval(model, loop) is model
    bn = model[0]
    assert torch.allclose(bn.running_mean, torch.full((3,), 2.5))
    assert torch.allclose(bn.running_var, torch.zeros(3))
    assert int(bn.num_batches_tracked) == 3
    assert bn.momentum == 0.1
    assert not model.training
    assert calls == []  # no sampling while calibrating


def test_recalibration_gives_the_statistics_of_the_data() -> None:
    torch.manual_seed(1)
    model = _bn_model()
    batches = [torch.randn(8, 3, 2, 2) * s + s for s in (1.0, 2.0, 3.0)]
    prep_for_eval(model, lambda m: [m(b) for b in batches])  # unpatched model
    bn = model[0]
    means = torch.stack([b.mean(dim=(0, 2, 3)) for b in batches])
    variances = torch.stack([b.transpose(0, 1).reshape(3, -1).var(dim=1) for b in batches])
    assert torch.allclose(bn.running_mean, means.mean(0), atol=1e-6)
    assert torch.allclose(bn.running_var, variances.mean(0), atol=1e-5)
    assert bn.momentum == 0.1 and not model.training


def test_eval_uses_the_stored_forward_loop() -> None:
    model = _bn_model()
    manager = AutoNASPatchManager(model)
    manager.patch()
    runs: list[int] = []

    def loop(m: nn.Module) -> None:
        runs.append(1)
        m(torch.full((2, 3, 1, 1), -1.0))
        m.eval()  # a loop that switches to eval itself does not recurse

    manager.forward_loop = loop
    model.train()
    model.eval()
    model.eval()
    assert runs == [1]
    assert torch.allclose(model[0].running_mean, torch.full((3,), -1.0))
    assert not model.training


def test_a_failing_forward_loop_keeps_the_old_statistics() -> None:
    model = _bn_model()
    bn = model[0]
    old = [bn.running_mean.clone(), bn.running_var.clone(), bn.num_batches_tracked.clone()]

    def loop(m: nn.Module) -> None:
        m(torch.zeros(2, 3, 1, 1))
        raise RuntimeError("loader broke")

    with pytest.raises(RuntimeError, match="loader broke"):
        prep_for_eval(model, loop)
    assert torch.equal(bn.running_mean, old[0])
    assert torch.equal(bn.running_var, old[1])
    assert torch.equal(bn.num_batches_tracked, old[2])
    assert bn.momentum == 0.1


def test_a_batchnorm_the_loop_never_reaches_keeps_its_statistics() -> None:
    model = nn.ModuleDict({"used": nn.BatchNorm1d(2), "unused": nn.BatchNorm1d(2)})
    model["unused"].running_mean.fill_(7.0)
    prep_for_eval(model, lambda m: m["used"](torch.ones(4, 2)))
    assert torch.equal(model["used"].running_mean, torch.ones(2))
    assert torch.equal(model["unused"].running_mean, torch.full((2,), 7.0))


def test_prep_for_eval_without_a_loop_only_switches_to_eval() -> None:
    model = _bn_model()
    mean = model[0].running_mean.clone()
    prep_for_eval(model)
    assert torch.equal(model[0].running_mean, mean)
    assert not model.training
    patched = _bn_model()
    Recorder(patched).patch()
    prep_for_eval(patched)
    assert _log(patched) == [("eval", None), ("train", False)]  # post-eval hook runs once
