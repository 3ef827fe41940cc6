"""Patching: run a mode's hooks around a model's ``forward`` and ``train``.

A :class:`PatchManager` overrides ``forward``, ``train`` and ``_replicate_for_data_parallel`` on
one model *instance* (never on its class) and keeps everything it needs in one attribute of that
model, the *patch data* (``model._nasviz_patch_data``): the manager class, the instance attributes
it shadowed, and whatever its subclass stores (a sampling callback, a calibration loop). Managers
themselves are stateless views: ``PatchManager.get_manager(model)`` rebuilds the right one from
the patch data, so a deep copy or a data-parallel replica of a patched model is patched too.

Subclasses customise behaviour through hooks: ``_hook_pre_forward``, ``_hook_post_forward``,
``_hook_post_train(mode)``, ``_hook_post_eval(forward_loop)`` (called when the model goes from
train to eval mode, or explicitly via :meth:`PatchManager.call_post_eval`) and
``_hook_before_sample`` (via :meth:`PatchManager.reset_before_sample`).

:class:`AutoNASPatchManager` samples a subnet before each training-mode forward (through a
pluggable ``sample_func(model)``) and re-calibrates BatchNorm statistics when the model goes to
eval mode. :func:`prep_for_eval` calibrates a (possibly patched) model and puts it in eval mode;
the calibration itself (:func:`recalibrate_bn`, :func:`calibration_loop`) is in
:mod:`nasviz.calibrate`, re-exported here (its former path).
"""

from __future__ import annotations

import contextlib
import types
from abc import ABC
from collections.abc import Callable, Iterator
from typing import Any

from torch import nn

from nasviz._utils import mha_fastpath_off
from nasviz.calibrate import ForwardLoop, calibration_loop, recalibrate_bn
from nasviz.errors import NasvizError

__all__ = [
    "AutoNASPatchManager",
    "ForwardLoop",
    "PatchManager",
    "calibration_loop",
    "prep_for_eval",
    "recalibrate_bn",
]


_PATCH_ATTR = "_nasviz_patch_data"
#: the methods a manager overrides on the instance, and the static hook implementing each one
_PATCHED = {
    "forward": "hooked_forward",
    "train": "hooked_train",
    "_replicate_for_data_parallel": "hooked__replicate_for_data_parallel",
}


def _data(model: nn.Module) -> dict[str, Any]:
    data: dict[str, Any] | None = model.__dict__.get(_PATCH_ATTR)
    if data is None:
        msg = (
            f"this {type(model).__name__} is not patched; convert it with a mode that patches "
            "it (e.g. 'fastnas') or call SomePatchManager(model).patch()"
        )
        raise NasvizError(msg)
    return data


def _call_original(mod: nn.Module, name: str, *args: Any, **kwargs: Any) -> Any:
    """Call method ``name`` as it was before patching (a shadowed instance attr or the class's)."""
    originals = _data(mod)["originals"]
    if name in originals:
        return originals[name](*args, **kwargs)
    return getattr(type(mod), name)(mod, *args, **kwargs)


@contextlib.contextmanager
def _in_post_eval(model: nn.Module) -> Iterator[None]:
    """Mark the post-eval phase: no sampling, and going to eval does not re-enter the hook."""
    data = _data(model)
    previous = data["in_post_eval"]
    data["in_post_eval"] = True
    try:
        yield
    finally:
        data["in_post_eval"] = previous


def _install(model: nn.Module, manager_cls: type[PatchManager]) -> None:
    for name, hook in _PATCHED.items():
        model.__dict__[name] = types.MethodType(getattr(manager_cls, hook), model)


# An ABC as in the reference API, yet instantiable: `PatchManager(model).unpatch()` must work.
class PatchManager(ABC):  # noqa: B024
    """A standard interface to monkey-patch one model instance, and to undo it exactly.

    Example::

        >>> class CountingManager(PatchManager):
        ...     def _hook_pre_forward(self, *args, **kwargs):
        ...         self.patch_data["calls"] = self.patch_data.get("calls", 0) + 1
        >>> model = nn.Linear(2, 2)
        >>> CountingManager(model).patch()
        >>> _ = model(torch.zeros(1, 2))
        >>> PatchManager.get_manager(model).patch_data["calls"]
        1
        >>> PatchManager(model).unpatch()   # model behaves exactly as before patch()
    """

    def __init__(self, model: nn.Module) -> None:
        if not isinstance(model, nn.Module):
            msg = f"a patch manager needs an nn.Module, got {type(model).__name__}"
            raise NasvizError(msg)
        self._model = model

    def __repr__(self) -> str:
        state = "patched" if self.is_patched(self._model) else "not patched"
        return f"{type(self).__name__}({type(self._model).__name__}, {state})"

    @property
    def model(self) -> nn.Module:
        """The model this manager acts on."""
        return self._model

    @classmethod
    def is_patched(cls, model: nn.Module) -> bool:
        """Whether ``model`` is patched (by any manager)."""
        return _PATCH_ATTR in model.__dict__

    @classmethod
    def get_manager(cls, model: nn.Module) -> PatchManager:
        """The manager of ``model``, of the class recorded when it was patched."""
        manager_cls: type[PatchManager] = _data(model)["manager_class"]
        return manager_cls(model)

    @property
    def patch_data(self) -> dict[str, Any]:
        """The patch data stored on the model (raises if the model is not patched)."""
        return _data(self._model)

    @property
    def patch_data_or_empty(self) -> dict[str, Any]:
        """The patch data, or an empty dict if the model is not patched."""
        data: dict[str, Any] = self._model.__dict__.get(_PATCH_ATTR, {})
        return data

    def _default_patch_data(self) -> dict[str, Any]:
        """Extra entries a subclass keeps in the patch data (added by :meth:`patch`)."""
        return {}

    def patch(self) -> None:
        """Patch the model in place; raises if it is already patched."""
        model = self._model
        if self.is_patched(model):
            owner = _data(model)["manager_class"].__name__
            msg = (
                f"this {type(model).__name__} is already patched by {owner}; call "
                "PatchManager.get_manager(model).unpatch() before patching it again"
            )
            raise NasvizError(msg)
        originals = {n: model.__dict__[n] for n in _PATCHED if n in model.__dict__}
        data = {"manager_class": type(self), "originals": originals, "in_post_eval": False}
        data.update(self._default_patch_data())
        model.__dict__[_PATCH_ATTR] = data
        _install(model, type(self))

    def unpatch(self) -> None:
        """Remove the patching: the model's attributes and behaviour are as before :meth:`patch`."""
        model = self._model
        originals = _data(model)["originals"]
        for name in _PATCHED:
            if name in originals:
                model.__dict__[name] = originals[name]
            else:
                model.__dict__.pop(name, None)
        del model.__dict__[_PATCH_ATTR]

    def call_post_eval(self, forward_loop: ForwardLoop | None = None) -> None:
        """Call the post-eval hook explicitly (e.g. to calibrate with ``forward_loop``)."""
        with _in_post_eval(self._model):
            self._hook_post_eval(forward_loop)

    def reset_before_sample(self) -> None:
        """Call the reset hook before sample-related operations (sample and select)."""
        self._hook_before_sample()

    # -- the methods installed on the instance ------------------------------------------------

    @staticmethod
    def hooked_forward(mod: nn.Module, *args: Any, **kwargs: Any) -> Any:
        """The forward method with hooks.

        It runs with torch's fused multi-head-attention fast path off: that fused kernel
        (``nn.TransformerEncoderLayer``'s) reads the full weights of its linear layers, not a
        subnet's slices; the unfused path computes the same function from the layers' calls.
        """
        manager = PatchManager.get_manager(mod)
        manager._hook_pre_forward(*args, **kwargs)
        with mha_fastpath_off():
            output = _call_original(mod, "forward", *args, **kwargs)
        manager._hook_post_forward(output, *args, **kwargs)
        return output

    @staticmethod
    def hooked_train(mod: nn.Module, mode: bool = True) -> nn.Module:
        """Set train or eval mode; going from train to eval calls the post-eval hook."""
        manager = PatchManager.get_manager(mod)
        was_training = mod.training
        _call_original(mod, "train", mode)
        manager._hook_post_train(mode)
        if was_training and not mode and not _data(mod)["in_post_eval"]:
            manager.call_post_eval(None)
        return mod

    @staticmethod
    def hooked__replicate_for_data_parallel(mod: nn.Module) -> nn.Module:
        """Replicate for ``DataParallel``; the replica is patched and its hooks see the replica."""
        data = _data(mod)
        replica: nn.Module = _call_original(mod, "_replicate_for_data_parallel")

        def rebind(value: Any) -> Any:
            if isinstance(value, types.MethodType) and value.__self__ is mod:
                return types.MethodType(value.__func__, replica)
            return value

        replica_data = dict(data)
        replica_data["originals"] = {n: rebind(v) for n, v in data["originals"].items()}
        replica.__dict__[_PATCH_ATTR] = replica_data
        _install(replica, data["manager_class"])
        return replica

    # -- hooks for subclasses (deliberately optional, hence not abstract) --------------------

    def _hook_pre_forward(self, *args: Any, **kwargs: Any) -> None:  # noqa: B027
        """Called before each forward with its arguments."""

    def _hook_post_forward(self, output: Any, *args: Any, **kwargs: Any) -> None:  # noqa: B027
        """Called after each forward with its output and arguments."""

    def _hook_post_train(self, mode: bool) -> None:  # noqa: B027
        """Called after ``train(mode)`` / ``eval()``."""

    def _hook_post_eval(self, forward_loop: ForwardLoop | None = None) -> None:  # noqa: B027
        """Called when the model goes from train to eval mode, or by :meth:`call_post_eval`."""

    def _hook_before_sample(self) -> None:  # noqa: B027
        """Called by :meth:`reset_before_sample`."""


class AutoNASPatchManager(PatchManager):
    """Sample a subnet before each training forward; re-calibrate BatchNorm on eval.

    ``sample_func(model)`` (default ``None``: no sampling) is called before every forward in
    train mode. ``forward_loop`` (default ``None``) is the calibration loop used when the model
    goes to eval mode without one being passed explicitly. Example::

        >>> model = nn.Sequential(nn.Conv2d(3, 8, 1), nn.BatchNorm2d(8))
        >>> manager = AutoNASPatchManager(model)
        >>> manager.patch()
        >>> manager.sample_func = lambda m: None  # e.g. a random subnet sampler
        >>> batches = [torch.randn(4, 3, 8, 8) for _ in range(2)]
        >>> _ = prep_for_eval(model, lambda m: [m(x) for x in batches])  # BN stats recomputed
        >>> model.training
        False
    """

    @property
    def sample_during_training(self) -> bool:
        """Whether a new subnet is sampled before each training-mode forward."""
        return True

    def _default_patch_data(self) -> dict[str, Any]:
        return {"sample_func": None, "forward_loop": None}

    @property
    def sample_func(self) -> Callable[[nn.Module], Any] | None:
        """The sampling callback (``sample_func(model)``), or ``None``."""
        func: Callable[[nn.Module], Any] | None = self.patch_data.get("sample_func")
        return func

    @sample_func.setter
    def sample_func(self, func: Callable[[nn.Module], Any] | None) -> None:
        if func is not None and not callable(func):
            msg = f"sample_func must be callable as sample_func(model), got {func!r}"
            raise NasvizError(msg)
        self.patch_data["sample_func"] = func

    @property
    def forward_loop(self) -> ForwardLoop | None:
        """The default BatchNorm calibration loop (``forward_loop(model)``), or ``None``."""
        loop: ForwardLoop | None = self.patch_data.get("forward_loop")
        return loop

    @forward_loop.setter
    def forward_loop(self, loop: ForwardLoop | None) -> None:
        if loop is not None and not callable(loop):
            msg = f"forward_loop must be callable as forward_loop(model), got {loop!r}"
            raise NasvizError(msg)
        self.patch_data["forward_loop"] = loop

    def _hook_pre_forward(self, *args: Any, **kwargs: Any) -> None:
        data = self.patch_data
        func = data.get("sample_func")
        sampling = self._model.training and self.sample_during_training
        if func is not None and sampling and not data["in_post_eval"]:
            func(self._model)

    def _hook_post_eval(self, forward_loop: ForwardLoop | None = None) -> None:
        loop = forward_loop if forward_loop is not None else self.forward_loop
        if loop is None:
            return
        model = self._model
        recalibrate_bn(model, loop, lambda mode: _call_original(model, "train", mode))


def prep_for_eval(model: nn.Module, forward_loop: ForwardLoop | None = None) -> nn.Module:
    """Calibrate ``model`` for evaluation and put it in eval mode; returns the model.

    A patched model is calibrated by its manager (``call_post_eval(forward_loop)``); an unpatched
    one has its BatchNorm statistics recomputed from ``forward_loop`` when one is given.
    """
    if PatchManager.is_patched(model):
        with _in_post_eval(model):  # this eval() must not call the post-eval hook a second time
            PatchManager.get_manager(model).call_post_eval(forward_loop)
            model.eval()
        return model
    if forward_loop is not None:
        recalibrate_bn(model, forward_loop, model.train)
    model.eval()
    return model
