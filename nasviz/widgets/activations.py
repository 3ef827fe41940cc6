"""ActivationViewer: what a layer outputs in the full model and in the pruned subnet, side by side.

A *feature map* is the output of one named sub-module for one input sample. The viewer runs both
models once on a batch of inputs (eval mode, no gradients, each module's train flag restored
afterwards) with an :class:`~nasviz.extension.ActivationMapGrabber` on the chosen module ids, and
shows, for the sample picked by the slider and the layer picked by the dropdown:

* conv-like outputs ``(C, H, W)``: the first ``n`` channels as a mosaic of small maps (tiles of
  channels the subnet no longer has stay blank), or the channel-mean map; both sides share one
  colour scale. Conversion sorts channels by importance and a subnet keeps the leading ones, so
  tile ``i`` is the same channel on both sides.
* 1-D outputs ``(F,)`` (a Linear): the features as bars; ``(C, L)`` outputs: a channels x length
  map.

**Which full model.** Conversion sorts each group's channels by importance, in place, so the
original model's channel ``i`` is generally not the converted model's channel ``i``: compare the
subnet with a *converted* full model (a deep copy taken right after ``nv.convert``, before a
search: re-calibrating BatchNorm for a subnet rewrites the kept channels' statistics in the full
buffers). Against the original, unconverted model the channel-mean view and the channel-mean
drift (invariant to the order) still compare like with like; tiles and full-tensor drift do not.

Below, the per-layer drift over the whole batch from :func:`nasviz.compare_activations`
(``rel_l2`` bars, ``cosine`` markers; a click on a bar picks that layer). "Refresh" re-runs both
models, e.g. after another subnet was selected; :attr:`ActivationViewer.drift` holds the table.

Example::

    model = nv.convert(model, mode="fastnas", dummy_input=x)
    full = copy.deepcopy(model)                  # converted, at full width, before any search
    model, state = nv.prune(model, ...)          # or nv.select(model, {...})
    viewer = ActivationViewer(full, model, images[:16])
    viewer                                                # in a notebook cell: shows it
    viewer.drift[["module_id", "rel_l2", "cosine"]]
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Sequence
from typing import Any

import ipywidgets as widgets
import numpy as np
import pandas as pd
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots
from torch import nn

import nasviz as nv
from nasviz._utils import training_flags
from nasviz.errors import NasvizError
from nasviz.widgets._base import COLORS, UI_LOCK, View, has_search_space, locked_batch

__all__ = ["ActivationViewer", "default_module_ids", "feature_panel"]

_CONV_TYPES = (nn.modules.conv._ConvNd,)


def default_module_ids(full_model: nn.Module, subnet_model: nn.Module) -> list[str]:
    """The prunable conv layers: convs whose width a hparam of the converted model drives.

    Taken from whichever model is converted (the subnet first); when neither is (an original and
    an exported model), every conv present in both. Falls back to every ``Linear`` in both.
    """
    both = dict(full_model.named_modules()).keys() & dict(subnet_model.named_modules()).keys()
    for model in (subnet_model, full_model):
        if has_search_space(model):
            modules = dict(model.named_modules())
            members = {m.module for g in nv.search_space(model).groups for m in g.members}
            ids = [
                name
                for name, mod in modules.items()
                if name in members and name in both and isinstance(mod, _CONV_TYPES)
            ]
            if ids:
                return ids
    for kind in (_CONV_TYPES, (nn.Linear,)):
        ids = [n for n, m in full_model.named_modules() if n in both and isinstance(m, kind)]
        if ids:
            return ids
    return []


def _json_safe(values: np.ndarray) -> list[Any]:
    """Nested lists with ``None`` for NaN/inf: widget messages are JSON, which has no NaN."""
    safe = values.astype(object)
    safe[~np.isfinite(values)] = None
    return list(safe.tolist())


def _mosaic(maps: np.ndarray, n: int) -> np.ndarray:
    """Tile the first ``n`` maps ``(k, H, W)`` in a grid of up to 4 columns, NaN between/blank."""
    cols = min(n, 4)
    rows = math.ceil(n / cols)
    h, w = maps.shape[1], maps.shape[2]
    out = np.full((rows * (h + 1) - 1, cols * (w + 1) - 1), np.nan)
    for i in range(min(n, maps.shape[0])):
        r, c = divmod(i, cols)
        out[r * (h + 1) : r * (h + 1) + h, c * (w + 1) : c * (w + 1) + w] = maps[i]
    return out


def feature_panel(sample: torch.Tensor, mode: str, n_channels: int, n_show: int) -> np.ndarray:
    """One sample's layer output ``(C, ...)`` as what the viewer draws.

    Returns a 1-D array (bars) or a 2-D array (a heatmap). ``mode="mean"`` averages over the
    channels; ``mode="channels"`` tiles channels ``0 .. n_show - 1`` (``n_channels`` of them
    exist on this side; missing ones are blank).
    """
    a = sample.detach().double().cpu()
    if a.dim() == 0:
        return a.reshape(1).numpy()
    if a.dim() == 1:
        return a.numpy()
    if a.dim() > 3:  # (C, D, H, W, ...) -> (C, D, H * W * ...)
        a = a.reshape(a.shape[0], a.shape[1], -1)
    if mode == "mean":
        return a.mean(dim=0).numpy()
    if a.dim() == 2:  # (C, L): the first channels as rows
        out = np.full((n_show, a.shape[1]), np.nan)
        k = min(n_show, n_channels)
        out[:k] = a[:k].numpy()
        return out
    return _mosaic(a[:n_show].numpy(), n_show)


class ActivationViewer(View):
    """Feature maps of the full model and the subnet side by side, plus per-layer drift.

    Args:
        full_model: the unpruned model: a copy of the converted model taken before the search
            (see the module docstring), or the original model (channel means only).
        subnet_model: the converted model at its selected subnet, or its exported model.
        inputs: a batch tensor ``(N, ...)``; the slider picks the sample shown.
        module_ids: qualified names present in both models (default: the prunable convs,
            :func:`default_module_ids`).
        n_channels: how many leading channels the mosaic shows (changeable in the view).

    Example::

        >>> viewer = ActivationViewer(full, pruned, images[:8])
        >>> viewer.layer.value = "res_conv1.0"; viewer.sample.value = 3
        >>> viewer.maps.data[0].z.shape  # the full model's mosaic
    """

    def __init__(
        self,
        full_model: nn.Module,
        subnet_model: nn.Module,
        inputs: torch.Tensor,
        module_ids: Sequence[str] | None = None,
        *,
        n_channels: int = 8,
    ) -> None:
        for name, m in (("full_model", full_model), ("subnet_model", subnet_model)):
            if not isinstance(m, nn.Module):
                msg = f"{name} must be a torch.nn.Module, got {type(m).__name__}"
                raise NasvizError(msg)
        if not isinstance(inputs, torch.Tensor) or inputs.dim() < 1 or inputs.shape[0] < 1:
            msg = (
                f"inputs must be a batch tensor (N, ...) with N >= 1, got "
                f"{type(inputs).__name__}{tuple(getattr(inputs, 'shape', ()))}; e.g. images[:16]"
            )
            raise NasvizError(msg)
        self.full_model, self.subnet_model, self.inputs = full_model, subnet_model, inputs
        ids = list(module_ids) if module_ids is not None else None
        if ids is None:
            ids = default_module_ids(full_model, subnet_model)
        self._check_ids(ids)
        self.module_ids: list[str] = ids
        self.full_activations: dict[str, torch.Tensor] = {}
        self.subnet_activations: dict[str, torch.Tensor] = {}
        self.drift: pd.DataFrame = pd.DataFrame()

        self.layer = widgets.Dropdown(options=ids, value=ids[0], description="layer")
        self.sample = widgets.IntSlider(
            value=0, min=0, max=int(inputs.shape[0]) - 1, description="sample"
        )
        self.mode = widgets.ToggleButtons(
            options=[("channels", "channels"), ("channel mean", "mean")], value="channels"
        )
        self.n_channels = widgets.BoundedIntText(
            value=n_channels, min=1, max=64, description="channels", layout={"width": "160px"}
        )
        self.refresh_button = widgets.Button(description="Refresh", icon="refresh")
        self.info = widgets.HTML("")
        self.maps = go.FigureWidget(
            make_subplots(rows=1, cols=2, subplot_titles=("full model", "subnet"))
        )
        for col, side in ((1, "full"), (2, "subnet")):
            self.maps.add_trace(
                go.Heatmap(z=[[0.0]], coloraxis="coloraxis", name=side, hoverongaps=False),
                row=1,
                col=col,
            )
        for col, (side, color) in enumerate((("full", "#1f77b4"), ("subnet", "#ff7f0e")), 1):
            self.maps.add_trace(
                go.Bar(y=[0.0], name=side, marker_color=color, visible=False), row=1, col=col
            )
        self.maps.update_layout(
            height=380, margin={"t": 40, "b": 30, "l": 40, "r": 20}, showlegend=False,
            coloraxis={"colorscale": "Viridis"},
        )  # fmt: skip
        self.drift_fig = go.FigureWidget(make_subplots(specs=[[{"secondary_y": True}]]))
        self.drift_fig.add_trace(go.Bar(x=ids, y=[0.0] * len(ids), name="rel_l2"))
        self.drift_fig.add_trace(
            go.Scatter(
                x=ids, y=[1.0] * len(ids), name="cosine", mode="markers+lines",
                marker={"color": COLORS["final"]},
            ),
            secondary_y=True,
        )  # fmt: skip
        self.drift_fig.update_layout(
            height=300, title="drift per layer over the batch (full vs subnet)",
            margin={"t": 50, "b": 80, "l": 50, "r": 50}, legend={"orientation": "h", "y": 1.12},
        )  # fmt: skip
        self.drift_fig.update_yaxes(title_text="rel. L2 distance", secondary_y=False)
        self.drift_fig.update_yaxes(title_text="cosine", secondary_y=True)
        self.drift_fig.data[0].on_click(self._on_bar_click)

        for w in (self.layer, self.sample, self.mode, self.n_channels):
            w.observe(self._on_change, names="value")
        self.refresh_button.on_click(lambda _b: self.refresh())
        controls = widgets.HBox([self.layer, self.sample, self.n_channels, self.refresh_button])
        self.widget = widgets.VBox([controls, self.mode, self.info, self.maps, self.drift_fig])
        self.refresh()

    # -- engine ----------------------------------------------------------------------------------
    def _check_ids(self, ids: list[str]) -> None:
        if not ids:
            msg = (
                "no module ids to show: the models have no prunable conv (or Linear) layers in "
                "common; pass module_ids=[...] with qualified names from model.named_modules()"
            )
            raise NasvizError(msg)
        for side, model in (("full_model", self.full_model), ("subnet_model", self.subnet_model)):
            names = [n for n, _ in model.named_modules()]
            for m_id in ids:
                if m_id not in names:
                    close = difflib.get_close_matches(str(m_id), names, n=3, cutoff=0.5)
                    msg = (
                        f"module_ids: {m_id!r} is not a sub-module of {side} "
                        f"({type(model).__name__}); closest names: {close}. Use names present "
                        "in both models (the same ids work on a converted and an exported model)"
                    )
                    raise NasvizError(msg)

    def _grab(self, model: nn.Module) -> dict[str, torch.Tensor]:
        with nv.ActivationMapGrabber(model, self.module_ids, detach=True) as grabber:
            _, acts = grabber(self.inputs)
        out: dict[str, torch.Tensor] = {}
        for m_id in self.module_ids:
            act = acts.get(m_id)
            if act is None:
                msg = (
                    f"module {m_id!r} did not run in {type(model).__name__} on these inputs; "
                    "pick modules on the forward path"
                )
                raise NasvizError(msg)
            if not isinstance(act, torch.Tensor):
                msg = (
                    f"module {m_id!r} returned a {type(act).__name__}, not a tensor; pick a "
                    "sub-module whose output is one tensor"
                )
                raise NasvizError(msg)
            out[m_id] = act
        return out

    def refresh(self) -> None:
        """Re-run both models (e.g. after another subnet was selected) and redraw everything."""
        with torch.no_grad(), training_flags(self.full_model, self.subnet_model, mode=False):
            self.full_activations = self._grab(self.full_model)
            self.subnet_activations = self._grab(self.subnet_model)
            self.drift = nv.compare_activations(
                self.full_model, self.subnet_model, self.inputs, self.module_ids
            )
        with locked_batch(self.drift_fig):
            self.drift_fig.data[0].y = _json_safe(self.drift["rel_l2"].to_numpy(float))
            self.drift_fig.data[1].y = _json_safe(self.drift["cosine"].to_numpy(float))
        self.render()

    # -- view ------------------------------------------------------------------------------------
    def _on_change(self, _change: dict[str, Any]) -> None:
        self.render()

    def _on_bar_click(self, _trace: Any, points: Any, _state: Any) -> None:
        idx = list(getattr(points, "point_inds", []))
        if idx:
            self.layer.value = self.module_ids[idx[0]]

    def panels(self) -> tuple[np.ndarray, np.ndarray]:
        """What is drawn now for the full model and the subnet (see :func:`feature_panel`)."""
        a = self.full_activations[self.layer.value][self.sample.value]
        b = self.subnet_activations[self.layer.value][self.sample.value]
        c_a = a.shape[0] if a.dim() else 1
        c_b = b.shape[0] if b.dim() else 1
        n_show = min(int(self.n_channels.value), c_a)
        mode = self.mode.value
        return feature_panel(a, mode, c_a, n_show), feature_panel(b, mode, c_b, n_show)

    def render(self) -> None:
        """Redraw the maps for the current layer, sample, mode and channel count."""
        m_id = self.layer.value
        a, b = self.panels()
        shape_a = tuple(self.full_activations[m_id].shape[1:])
        shape_b = tuple(self.subnet_activations[m_id].shape[1:])
        bars = a.ndim == 1
        with UI_LOCK, self.maps.batch_update():
            heat_full, heat_sub, bar_full, bar_sub = self.maps.data
            for trace, arr in ((heat_full, a), (heat_sub, b)):
                trace.visible = not bars
                trace.z = _json_safe(arr) if not bars else [[0.0]]
            for trace, arr in ((bar_full, a), (bar_sub, b)):
                trace.visible = bars
                trace.y = _json_safe(arr) if bars else [0.0]
                trace.x = list(range(len(arr))) if bars else [0]
            finite = np.concatenate([a[np.isfinite(a)].ravel(), b[np.isfinite(b)].ravel()])
            lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
            self.maps.layout.coloraxis.cmin, self.maps.layout.coloraxis.cmax = lo, hi
            for axis in (self.maps.layout.yaxis, self.maps.layout.yaxis2):
                axis.autorange = True if bars else "reversed"
            for axis in (
                self.maps.layout.xaxis,
                self.maps.layout.yaxis,
                self.maps.layout.xaxis2,
                self.maps.layout.yaxis2,
            ):
                axis.showticklabels = bars
            colors = [COLORS["final"] if i == m_id else COLORS["grow"] for i in self.module_ids]
            self.drift_fig.data[0].marker.color = colors
        row = self.drift[self.drift["module_id"] == m_id].iloc[0]
        what = "features" if bars else (
            f"channel mean over {shape_a[0]} / {shape_b[0]} channels" if self.mode.value == "mean"
            else f"channels 0-{min(int(self.n_channels.value), shape_a[0]) - 1}"
        )  # fmt: skip
        self.info.value = (
            f"<b>{m_id}</b> · sample {self.sample.value} · full {shape_a} · subnet {shape_b} · "
            f"{what} · batch drift: rel_l2 {row['rel_l2']:.3f}, cosine {row['cosine']:.3f} "
            f"({row['compared']})"
        )
