"""Activation grabbers: read (and feed on) what named sub-modules of a model output.

A *handle* wraps a model and puts a forward hook on some of its sub-modules, named by their
qualified names from ``model.named_modules()`` (``"layer1.0.conv1"``; ``""`` is the model itself).
The hooks record only while the handle itself runs the model, so a hooked model called directly
behaves exactly as before, and the records are cleared at the start and end of every call.

* ``HooksHandle``: the hook bookkeeping (register, unregister, look up, remove).
* ``ActivationMapGrabber``: returns ``(main output, {module_id: output})``.
* ``ModelExtender``: feeds those outputs to extension models, ``(main output, {name: ext out})``.
* ``ModelStump``: returns one sub-module's output and stops the forward pass right there.
* ``compare_activations``: per-layer drift between two models (e.g. original vs pruned).

Hooks are global state on the model, so every handle removes its hooks on ``remove_hooks()``, at
the end of a ``with`` block (also on an exception) and when it is deleted; ``attach_hooks()`` (or
entering a ``with`` block again) puts them back: that life cycle is :class:`HooksHandle`'s, in
:mod:`nasviz.hooks` (re-exported here, its former path).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal, cast

import pandas as pd
import torch
from torch import nn
from typing_extensions import override

from nasviz._utils import training_flags
from nasviz.errors import ExtensionNameError, ModuleIdError, NasvizError
from nasviz.hooks import HooksHandle, suggest

__all__ = [
    "ActivationMapGrabber",
    "ExtensionNameError",
    "HooksHandle",
    "ModelExtender",
    "ModelStump",
    "ModuleIdError",
    "compare_activations",
]

Capture = Literal["last", "all"]


def _detach(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.detach()
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):  # a namedtuple
        return type(obj)(*(_detach(o) for o in obj))
    if isinstance(obj, tuple | list):
        return type(obj)(_detach(o) for o in obj)
    if isinstance(obj, dict):
        return {k: _detach(v) for k, v in obj.items()}
    return obj


class ActivationMapGrabber(HooksHandle):
    """Return the model output together with the outputs of registered sub-modules.

    ``capture="last"`` (default) keeps the last output of a sub-module that runs several times in
    one forward; ``capture="all"`` gives the list of all its outputs in call order. A registered
    sub-module that did not run has no entry. Outputs are returned as they are (still in the
    autograd graph) unless ``detach=True``.

    Example::

        >>> model = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1))
        >>> with ActivationMapGrabber(model, ["0", "1"]) as grabber:
        ...     out, acts = grabber(torch.zeros(4, 2))
        >>> sorted(acts), acts["1"].shape
        (['0', '1'], torch.Size([4, 3]))
    """

    def __init__(
        self,
        model: nn.Module,
        module_ids: Iterable[str],
        *,
        capture: Capture = "last",
        detach: bool = False,
    ) -> None:
        if capture not in ("last", "all"):
            msg = f"capture must be 'last' or 'all', got {capture!r}"
            raise NasvizError(msg)
        super().__init__(model, module_ids)
        self.capture: Capture = capture
        self.detach = detach
        self._intermediate_outs: dict[str, Any] = {}

    def _on_output(self, module_id: str, output: Any) -> None:
        if self.detach:
            output = _detach(output)
        if self.capture == "all":
            self._intermediate_outs.setdefault(module_id, []).append(output)
        else:
            self._intermediate_outs[module_id] = output

    def forward(self, *inps: Any, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        """Run ``model(*inps, **kwargs)``; returns ``(main output, {module_id: output})``."""
        self._intermediate_outs = {}
        try:
            main_out = self._run_model(*inps, **kwargs)
            got = self._intermediate_outs
            outs = {m: got[m] for m in self._module_ids if m in got}
        finally:
            self._intermediate_outs = {}
        return main_out, outs

    def stump(self, module_id: str) -> ModelStump:
        """A ``ModelStump`` (in eval mode) yielding the output of ``module_id``.

        The stump shares ``wrapped_model`` and leaves its train/eval flags alone: it runs the
        model in eval mode and puts the flags back after each call.
        """
        stump = ModelStump(self.wrapped_model, module_id)
        stump.training = False  # the stump alone: eval() would switch the shared model too
        return stump

    @override
    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, capture={self.capture!r}, detach={self.detach}"


class ModelExtender(ActivationMapGrabber):
    """Extend a model's output by extension models fed with outputs of its sub-modules.

    ``extensions`` is ``{module_id: {name: extension model}}``; names are unique across all
    sub-modules. ``forward`` returns ``(main output, {name: ext(output of module_id)})``, or only
    the dict when ``return_orig_out`` is ``False``. With ``capture="all"`` each extension output is
    the list ``[ext(o) for o in outputs]``. Extension models live in ``extension_models`` (an
    ``nn.ModuleDict``), so their parameters are in ``parameters()`` and move with ``.to()``.

    Example::

        >>> model = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1))
        >>> ext = ModelExtender(model, {"1": {"probe": nn.Linear(3, 2)}})
        >>> out, ext_outs = ext(torch.zeros(4, 2))
        >>> ext_outs["probe"].shape, ext.name_registrations
        (torch.Size([4, 2]), {'1': ['probe']})
    """

    def __init__(
        self,
        model: nn.Module,
        extensions: Mapping[str, Mapping[str, nn.Module]],
        return_orig_out: bool = True,
        *,
        capture: Capture = "last",
        detach: bool = False,
    ) -> None:
        super().__init__(model, [], capture=capture, detach=detach)
        self.return_orig_out = return_orig_out
        self.extension_models = nn.ModuleDict()
        self._name_registrations: dict[str, list[str]] = {}
        self.register_extensions(extensions)

    @property
    def name_registrations(self) -> dict[str, list[str]]:
        """Dict mapping sub-module ids to the names of their extensions."""
        return {m: list(names) for m, names in self._name_registrations.items()}

    @property
    def extensions(self) -> dict[str, dict[str, nn.Module]]:
        """Nested dict ``{module_id: {name: extension model}}``."""
        return {
            m: {n: self.extension_models[n] for n in names}
            for m, names in self._name_registrations.items()
        }

    @property
    def extension_names(self) -> list[str]:
        """List of the names of all registered extensions."""
        return list(self.extension_models.keys())

    def _check_new(self, name: str, module_id: str, model: nn.Module, taken: set[str]) -> None:
        if not isinstance(name, str) or not name or "." in name:
            msg = f"extension name {name!r} must be a non-empty str without '.'"
            raise NasvizError(msg)
        if name in taken:
            where = [m for m, ns in self._name_registrations.items() if name in ns]
            msg = (
                f"extension name {name!r} is already registered (at {where or 'this call'}); "
                "names are unique across all sub-modules: pick another or unregister it first"
            )
            raise NasvizError(msg)
        if name in vars(self.extension_models):  # e.g. 'training': would break .train()
            msg = f"extension name {name!r} clashes with an nn.ModuleDict attribute"
            raise NasvizError(msg)
        if not isinstance(model, nn.Module):
            msg = f"extension {name!r} must be an nn.Module, got {type(model).__name__}"
            raise NasvizError(msg)
        self.get_module_by_id(module_id)

    def register_extension(self, name: str, module_id: str, model: nn.Module) -> None:
        """Register ``model`` as extension ``name`` fed by ``module_id``; duplicates raise."""
        self.register_extensions({module_id: {name: model}})

    def register_extensions(self, new_extensions: Mapping[str, Mapping[str, nn.Module]]) -> None:
        """Register ``{module_id: {name: model}}``; all are checked before any is registered."""
        taken = set(self.extension_models.keys())
        for module_id, named in new_extensions.items():
            for name, model in named.items():
                self._check_new(name, module_id, model, taken)
                taken.add(name)
        for module_id, named in new_extensions.items():
            for name, model in named.items():
                self.register_submodule(module_id)
                # not via add_module: it also refuses method names such as 'double' or 'eval',
                # which are harmless as keys (the dict is only ever indexed by key)
                self.extension_models._modules[name] = model
                self._name_registrations.setdefault(module_id, []).append(name)

    def unregister_extension(self, name: str) -> None:
        """Unregister extension ``name``; a sub-module left without extensions is unhooked."""
        if name not in self.extension_models:
            msg = (
                f"extension {name!r} is not registered; {suggest(str(name), self.extension_names)}"
            )
            raise ExtensionNameError(msg)
        del self.extension_models[name]
        module_id = next(m for m, ns in self._name_registrations.items() if name in ns)
        self._name_registrations[module_id].remove(name)
        if not self._name_registrations[module_id]:
            del self._name_registrations[module_id]
            super().unregister_submodule(module_id)

    def unregister_submodule(self, module_id: str) -> None:
        """Unregister a sub-module; refused while extensions still read from it."""
        if self._name_registrations.get(module_id):
            msg = (
                f"module {module_id!r} feeds extensions {self._name_registrations[module_id]}; "
                "unregister them with unregister_extension() instead"
            )
            raise NasvizError(msg)
        super().unregister_submodule(module_id)

    def forward(  # type: ignore[override]
        self, *inps: Any, **kwargs: Any
    ) -> tuple[Any, dict[str, Any]] | dict[str, Any]:
        """Returns ``(main output, {name: ext output})``, or only the dict."""
        main_out, acts = super().forward(*inps, **kwargs)
        ext_outs: dict[str, Any] = {}
        for module_id, names in self._name_registrations.items():
            if module_id not in acts:
                continue
            for name in names:
                ext = self.extension_models[name]
                act = acts[module_id]
                ext_outs[name] = [ext(a) for a in act] if self.capture == "all" else ext(act)
        return (main_out, ext_outs) if self.return_orig_out else ext_outs

    @override
    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, return_orig_out={self.return_orig_out}"


class _StumpStop(Exception):  # noqa: N818 - a control-flow signal, not an error
    """Raised by a stump's hook to end the forward pass; carries the head's output."""

    def __init__(self, output: Any) -> None:
        super().__init__()
        self.output = output


class ModelStump(HooksHandle):
    """The model cut after ``stump_head``: returns that sub-module's output, runs nothing later.

    A hook on ``stump_head`` raises a private exception carrying the output, caught in
    ``forward``; this relies on the model not catching that exception itself.

    Example::

        >>> model = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1))
        >>> ModelStump(model, "1")(torch.zeros(4, 2)).shape
        torch.Size([4, 3])
    """

    def __init__(self, model: nn.Module, stump_head: str) -> None:
        super().__init__(model, [stump_head])
        self.stump_head = stump_head

    def register_submodule(self, module_id: str) -> None:
        """A stump has exactly one head; registering a second sub-module is refused."""
        if self._module_ids and module_id not in self._module_ids:
            msg = (
                f"a ModelStump has one head ({self._module_ids[0]!r}); "
                f"create another ModelStump for {module_id!r}"
            )
            raise NasvizError(msg)
        super().register_submodule(module_id)

    def _on_output(self, module_id: str, output: Any) -> None:
        raise _StumpStop(output)

    def forward(self, *inps: Any, **kwargs: Any) -> Any:
        """Run the model up to ``stump_head`` and return its output.

        A stump in eval mode runs the model in eval mode, whatever the model's own flags are,
        and puts them back afterwards.
        """
        flags = [] if self.training else [(m, m.training) for m in self.wrapped_model.modules()]
        try:
            for m, _ in flags:
                m.training = False
            self._run_model(*inps, **kwargs)
        except _StumpStop as stop:
            return stop.output
        finally:
            for m, flag in flags:
                m.training = flag
        msg = (
            f"stump head {self.stump_head!r} did not run in the forward pass of "
            f"{type(self.wrapped_model).__name__}; pick a sub-module on the forward path"
        )
        raise NasvizError(msg)

    @override
    def extra_repr(self) -> str:
        return f"stump_head={self.stump_head!r}, hooks_attached={self._attached}"


def _stats(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float, float]:
    a, b = a.detach().double().flatten().cpu(), b.detach().double().flatten().cpu()
    norm_a, norm_b, diff = a.norm().item(), b.norm().item(), (a - b).norm().item()
    rel = diff / norm_a if norm_a > 0 else (0.0 if diff == 0 else float("inf"))
    cos = float(torch.dot(a, b).item() / (norm_a * norm_b)) if norm_a * norm_b > 0 else float("nan")
    max_abs = float((a - b).abs().max().item()) if a.numel() else 0.0
    return rel, cos, max_abs


def _compare_one(a: Any, b: Any, module_id: str, channel_dim: int) -> dict[str, Any]:
    if not isinstance(a, torch.Tensor) or not isinstance(b, torch.Tensor):
        msg = (
            f"module {module_id!r} returned {type(a).__name__}/{type(b).__name__}, not tensors; "
            "compare a sub-module whose output is a single tensor"
        )
        raise NasvizError(msg)
    row: dict[str, Any] = {"module_id": module_id, "shape_a": tuple(a.shape)}
    row["shape_b"] = tuple(b.shape)
    if a.shape == b.shape:
        row["compared"] = "full tensor"
        rel, cos, max_abs = _stats(a, b)
    else:
        same_rest = a.dim() == b.dim() and a.dim() >= 2
        if same_rest:
            dim = channel_dim % a.dim()
            same_rest = all(a.shape[i] == b.shape[i] for i in range(a.dim()) if i != dim)
        if not same_rest:
            row["compared"] = f"not compared: shapes differ outside channel_dim={channel_dim}"
            rel = cos = max_abs = float("nan")
        else:
            row["compared"] = f"channel mean (mean over dim {dim})"
            rel, cos, max_abs = _stats(a.mean(dim=dim), b.mean(dim=dim))
    row.update(rel_l2=rel, cosine=cos, max_abs_diff=max_abs)
    return row


def compare_activations(
    model_a: nn.Module,
    model_b: nn.Module,
    inputs: torch.Tensor | Sequence[Any],
    module_ids: Sequence[str],
    *,
    channel_dim: int = 1,
) -> pd.DataFrame:
    """Per-layer drift between two models run on the same inputs (e.g. original vs pruned).

    ``inputs`` is one tensor or a tuple/list of positional inputs, passed unchanged to both
    models. Both run under ``torch.no_grad()`` in eval mode; every module's train/eval flag is
    restored afterwards. One row per module id (same qualified name in both models), columns:

    * ``module_id``, ``shape_a``, ``shape_b``;
    * ``compared``: what was compared. ``"full tensor"`` when the shapes match. When they differ
      only in ``channel_dim`` (a pruned layer), ``"channel mean (mean over dim d)"``: both outputs
      are averaged over the channel dimension, giving per-sample maps of equal shape (``(N, H, W)``
      for convs, ``(N,)`` for linears), which are compared. Other shape differences are not
      compared (NaN stats).
    * ``rel_l2`` = ``||a - b|| / ||a||`` over the whole compared tensor (0 if both are zero,
      inf if only ``a`` is); ``cosine`` = ``<a, b> / (||a|| ||b||)`` (NaN if either is zero);
      ``max_abs_diff`` = ``max |a - b|``. Computed in float64.

    A module that did not run, or whose output is not a tensor, raises ``NasvizError``.
    """
    args = (inputs,) if isinstance(inputs, torch.Tensor) else tuple(inputs)
    ids = [module_ids] if isinstance(module_ids, str) else list(module_ids)
    acts: list[dict[str, Any]] = []
    with training_flags(model_a, model_b), torch.no_grad():
        for model in (model_a, model_b):
            model.eval()
            with ActivationMapGrabber(model, ids) as grabber:
                acts.append(grabber(*args)[1])
    rows = []
    for m_id in ids:
        for side, got in zip("ab", acts):
            if m_id not in got:
                msg = f"module {m_id!r} did not run in model_{side} on these inputs"
                raise NasvizError(msg)
        rows.append(_compare_one(acts[0][m_id], acts[1][m_id], m_id, channel_dim))
    columns = ["module_id", "shape_a", "shape_b", "compared", "rel_l2", "cosine", "max_abs_diff"]
    return cast(pd.DataFrame, pd.DataFrame(rows, columns=columns))
