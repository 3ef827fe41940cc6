"""Latency against FLOPs over sampled subnets: where fewer FLOPs do not mean less time.

:func:`latency_flops_figure` draws a table of :func:`nasviz.search.latency.sample_latency` (one
row per random subnet: FLOPs, measured latency, optionally the predicted latency) as a scatter of
measured latency against FLOPs. Each point is coloured by its *rank disagreement*
(:func:`nasviz.search.latency.rank_disagreement`: how far apart the subnet's rank by FLOPs and its
rank by latency are, as a fraction of the sample); points above ``threshold`` are outlined and
listed, so the subnets that a FLOPs constraint would rank wrongly stand out. Kendall's tau
between the two orders is in the title. With predictions, a second trace shows them.

:class:`LatencyScatter` is the same figure as a view with a *Measure* button that samples and
measures ``n`` subnets of a converted model (the engine does the measuring; the view draws).

Example::

    table = sample_latency(model, x, 30, latency_model=lat)
    fig = latency_flops_figure(table)           # a plotly Figure
    view = LatencyScatter(model, x, n=30)       # or interactively: press Measure
"""

from __future__ import annotations

import html
from typing import Any

import ipywidgets as widgets
import pandas as pd
import plotly.graph_objects as go
from torch import nn

from nasviz.errors import NasvizError
from nasviz.search.latency import LatencyModel, rank_disagreement, sample_latency
from nasviz.widgets._base import COLORS, UI_LOCK, View, fmt_flops, locked_batch

__all__ = ["LatencyScatter", "latency_flops_figure"]

MEASURED, PREDICTED = 0, 1  # trace indices


def _config_text(config: Any) -> str:
    return ", ".join(f"{k}={v}" for k, v in dict(config).items())


def latency_flops_figure(
    table: pd.DataFrame, threshold: float = 0.25, figure: go.Figure | None = None
) -> go.Figure:
    """Measured (and predicted) latency in ms against FLOPs, coloured by rank disagreement.

    ``table`` needs ``flops`` and ``measured`` (seconds) columns (``predicted`` and ``config``
    are used when present). Returns ``figure`` (updated in place) or a new ``go.Figure``;
    ``figure.layout.meta`` holds ``{"tau": ..., "disagree": [row indices above threshold]}``.
    """
    missing = {"flops", "measured"} - set(table.columns)
    if missing:
        msg = (
            f"the latency table lacks column(s) {sorted(missing)}: pass the output of "
            "nasviz.search.latency.sample_latency"
        )
        raise NasvizError(msg)
    if not 0 <= threshold <= 1:
        msg = f"threshold={threshold!r} must be a fraction in [0, 1]"
        raise NasvizError(msg)
    ranked = rank_disagreement(table)
    tau = ranked.attrs["tau"]
    disagree = [int(i) for i in ranked.index[ranked["disagreement"] > threshold]]
    configs = ranked["config"] if "config" in ranked else pd.Series([{}] * len(ranked))
    hover = [
        f"{fmt_flops(f)} · {1e3 * t:.3g} ms<br>rank by FLOPs {fr}, by latency {lr}<br>"
        f"{html.escape(_config_text(c))}"
        for f, t, fr, lr, c in zip(
            ranked["flops"],
            ranked["measured"],
            ranked["flops_rank"],
            ranked["latency_rank"],
            configs,
        )
    ]
    outline = [2.5 if i in disagree else 0.5 for i in ranked.index]
    fig = figure if figure is not None else go.Figure(data=[go.Scatter(), go.Scatter()])
    fig.data[MEASURED].update(
        x=list(ranked["flops"]),
        y=list(1e3 * ranked["measured"]),
        mode="markers",
        name="measured",
        text=hover,
        hovertemplate="%{text}<extra></extra>",
        marker={
            "size": 11,
            "color": list(ranked["disagreement"]),
            "colorscale": "YlOrRd",
            "cmin": 0.0,
            "cmax": 1.0,
            "colorbar": {"title": "rank<br>disagreement"},
            "line": {"width": outline, "color": COLORS["limit"]},
        },
    )
    has_pred = "predicted" in ranked
    fig.data[PREDICTED].update(
        x=list(ranked["flops"]) if has_pred else [],
        y=list(1e3 * ranked["predicted"]) if has_pred else [],
        mode="markers",
        name="predicted",
        marker={"symbol": "x", "size": 7, "color": COLORS["grow"]},
        visible=has_pred,
    )
    fig.update_layout(
        title=f"latency vs FLOPs over {len(ranked)} subnets (Kendall tau {tau:.2f}; "
        f"{len(disagree)} disagree by > {threshold:.0%})",
        xaxis_title="FLOPs",
        yaxis_title="latency (ms)",
        meta={"tau": tau, "disagree": disagree},
        height=420,
        width=640,
        legend={"orientation": "h", "y": -0.2},
    )
    return fig


class LatencyScatter(View):
    """Sample and measure subnets of a converted model, show latency against FLOPs.

    Example::

        >>> view = LatencyScatter(model, x, n=20, latency_model=lat)
        >>> view.measure()              # or press the button
        >>> view.table.shape[0], view.fig.layout.meta["tau"]
    """

    def __init__(
        self,
        model: nn.Module,
        dummy_input: Any,
        n: int = 20,
        *,
        latency_model: LatencyModel | None = None,
        measure: Any = None,
        threshold: float = 0.25,
        seed: int = 0,
    ) -> None:
        self.model, self.dummy_input = model, dummy_input
        self.latency_model, self._measure = latency_model, measure
        self.threshold, self.seed = threshold, seed
        self.table: pd.DataFrame | None = None
        self.n = widgets.BoundedIntText(value=n, min=2, max=500, description="subnets")
        self.button = widgets.Button(description="Measure", icon="clock-o", button_style="primary")
        self.status = widgets.HTML("press Measure to time random subnets on this device")
        self.fig = go.FigureWidget(data=[go.Scatter(), go.Scatter()])
        self.button.on_click(lambda _b: self.measure())
        self.widget = widgets.VBox([widgets.HBox([self.n, self.button]), self.status, self.fig])

    def measure(self) -> pd.DataFrame:
        """Measure ``n`` random subnets (the engine's ``sample_latency``) and draw them."""
        self.button.disabled = True
        try:
            self.status.value = f"measuring {self.n.value} subnets..."
            table = sample_latency(
                self.model,
                self.dummy_input,
                int(self.n.value),
                latency_model=self.latency_model,
                measure=self._measure,
                seed=self.seed,
            )
        finally:
            self.button.disabled = False
        self.show(table)
        return table

    def show(self, table: pd.DataFrame) -> None:
        """Draw an already measured table."""
        with UI_LOCK, locked_batch(self.fig):
            latency_flops_figure(table, self.threshold, figure=self.fig)
        self.table = table
        meta = self.fig.layout.meta
        err = ""
        if "error_pct" in table:
            e = table["error_pct"].abs()
            err = f"; prediction |error| median {e.median():.1f}%, max {e.max():.1f}%"
        self.status.value = (
            f"{len(table)} subnets: Kendall tau {meta['tau']:.2f}, "
            f"{len(meta['disagree'])} with rank disagreement > {self.threshold:.0%}{err}"
        )
