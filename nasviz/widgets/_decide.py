"""The explorer's decision panel: predicted drop, predicted vs measured, the front, pins, code.

:class:`DecisionPanel` is the part of :class:`~nasviz.widgets.explorer.SubnetExplorer` that
turns the sensitivity map into decisions; it renders engine results only:

* the **predicted score drop** of the slider setting, next to FLOPs/params
  (:func:`nasviz.fastnas.predict_drop`: the sum of single-group drops, FastNAS's additivity
  assumption, said in the label);
* after each *Evaluate*, **predicted vs measured** drop for every evaluated subnet, in the
  explorer's table and a small scatter plot against the ``y = x`` line;
* the **Pareto front** (:func:`nasviz.fastnas.pareto_front`): FLOPs against predicted drop, the
  current choice and the search's pick marked; clicking a point sets the sliders;
* **pins**: a lock per group; the tolerated-drop slider, the front and *search again*
  (:func:`nasviz.fastnas.search_with_pins`, the map reused) keep locked groups at their width;
* *show as code* (:func:`nasviz.fastnas.config_as_code`).
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import ipywidgets as widgets
import pandas as pd
import plotly.graph_objects as go

from nasviz.errors import NasvizError
from nasviz.fastnas import config_as_code, pareto_front, predict_drop, search_with_pins
from nasviz.widgets._base import COLORS, UI_LOCK, fmt_delta, locked_batch

if TYPE_CHECKING:
    from nasviz.widgets.explorer import SubnetExplorer

__all__ = ["FRONT_CANDIDATES", "DecisionPanel"]

#: candidates priced for the explorer's front (a larger space is sampled, seeded): ~0.5 s per
#: lock change on the ResNet-style reference; slider moves do not recompute the front
FRONT_CANDIDATES = 20_000

ADDITIVITY_NOTE = (
    "predicted = sum of the single-group drops in the sensitivity map "
    "(FastNAS's additivity assumption: interactions between groups are ignored)"
)


class DecisionPanel:
    """Predicted drop, predicted vs measured, Pareto front, pins and code for one explorer."""

    def __init__(
        self,
        explorer: SubnetExplorer,
        original_score: float | None = None,
        search_pick: Mapping[str, int] | None = None,
    ) -> None:
        self.ex = explorer
        self.original_score = original_score
        self.search_pick = dict(search_pick) if search_pick else None
        self.front = pd.DataFrame()
        self.locks: dict[str, widgets.Checkbox] = {
            name: widgets.Checkbox(
                value=False, description="lock", indent=False, layout={"width": "70px"}
            )
            for name in explorer.sliders
        }
        self.predicted_label = widgets.HTML("", layout={"width": "100%"})
        self.front_fig = self._front_figure()
        self.agreement_fig = self._agreement_figure()
        self.search_button = widgets.Button(
            description="search again",
            icon="search",
            tooltip="the binary search over the map, locked groups fixed (scores its final "
            "candidates)",
            disabled=not self.can_search,
        )
        self.code_button = widgets.Button(description="show as code", icon="code")
        self.code = widgets.Textarea(
            value="", layout={"width": "900px", "height": "0px", "display": "none"}
        )
        self.status = widgets.HTML("")
        for lock in self.locks.values():
            lock.observe(lambda _c: self.pins_changed(), names="value")
        self.front_fig.data[0].on_click(self.front_clicked)
        self.search_button.on_click(lambda _b: self._search_clicked())
        self.code_button.on_click(lambda _b: self.show_code())
        self.widget = widgets.VBox(
            [
                self.predicted_label,
                widgets.HBox([self.front_fig, self.agreement_fig]),
                widgets.HBox([self.search_button, self.code_button, self.status]),
                self.code,
            ]
        )
        self.refresh_front()

    # -- state -----------------------------------------------------------------------------------
    @property
    def has_map(self) -> bool:
        return bool(self.ex.sensitivity_map)

    @property
    def can_search(self) -> bool:
        return self.has_map and self.ex.constraints is not None and self.ex.score_func is not None

    @property
    def pins(self) -> dict[str, int]:
        """``{group: width}`` of the locked groups (their sliders' values)."""
        return {n: int(self.ex.sliders[n].value) for n, lock in self.locks.items() if lock.value}

    def predicted(self, config: Mapping[str, int]) -> float | None:
        """The predicted drop of ``config`` (``None`` without a map)."""
        return predict_drop(self.ex.sensitivity_map, config) if self.has_map else None

    # -- reactions -------------------------------------------------------------------------------
    def changed(self, config: Mapping[str, int], flops: int) -> None:
        """A slider moved: the predicted drop and the current-choice marker follow."""
        drop = self.predicted(config)
        with UI_LOCK:
            if drop is None:
                self.predicted_label.value = "<b>predicted drop</b> — (pass a sensitivity map)"
                return
            self.predicted_label.value = (
                f"<b>predicted score drop</b> {fmt_delta(drop)} "
                f"<span style='color:{COLORS['neutral']}'>({html.escape(ADDITIVITY_NOTE)})</span>"
            )
            with locked_batch(self.front_fig):
                cur = self.front_fig.data[1]
                cur.x = [100.0 * flops / self.ex.full[0]]
                cur.y = [drop]

    def pins_changed(self) -> None:
        """A lock changed: locked sliders freeze; the front is recomputed with the pins."""
        pins = self.pins
        for name, slider in self.ex.sliders.items():
            slider.disabled = name in pins
        self.refresh_front()

    def refresh_front(self) -> None:
        """Recompute the Pareto front for the current map and pins, and redraw it."""
        if not self.has_map:
            self.front = pd.DataFrame()
            return
        self.front = pareto_front(
            self.ex.sensitivity_map,
            self.ex.hparams,
            self.ex.cost_model,
            pins=self.pins,
            max_candidates=FRONT_CANDIDATES,
        )
        pct = [100.0 * f / self.ex.full[0] for f in self.front["flops"]]
        with locked_batch(self.front_fig):
            pts = self.front_fig.data[0]
            pts.x = pct
            pts.y = list(self.front["drop"])
            pts.text = [
                ", ".join(f"{n.rsplit('.', 1)[0]}={v}" for n, v in c.items())
                for c in self.front["config"]
            ]
            pick = self.front_fig.data[2]
            if self.search_pick is not None:
                f, _ = self.ex.cost_model.estimate(self.search_pick)
                pick.x = [100.0 * f / self.ex.full[0]]
                pick.y = [self.predicted(self.search_pick)]
            self.front_fig.layout.title.text = (
                f"Pareto front: {len(self.front)} of {self.front.attrs['candidates']} subnets"
                + (f", {len(self.pins)} locked" if self.pins else "")
            )

    def front_clicked(self, trace: Any, points: Any, state: Any = None) -> None:
        """Plotly ``on_click`` of the front: set the sliders to the clicked subnet."""
        inds = list(getattr(points, "point_inds", []) or [])
        if inds and len(self.front):
            self.ex.value = self.front["config"].iloc[inds[0]]

    def annotate(self, record: dict[str, Any]) -> dict[str, Any]:
        """Add the predicted and the measured drop to an evaluation record (returned)."""
        record["predicted_drop"] = self.predicted(record["config"])
        base = self.original_score
        record["measured_drop"] = None if base is None else base - float(record["score"])
        return record

    def redraw_agreement(self) -> None:
        """Predicted against measured drop for every evaluated subnet that has both."""
        rows = [
            e
            for e in self.ex.evaluations
            if e.get("predicted_drop") is not None and e.get("measured_drop") is not None
        ]
        pred = [float(e["predicted_drop"]) for e in rows]
        meas = [float(e["measured_drop"]) for e in rows]
        lo, hi = min(0.0, *pred, *meas), max(0.0, *pred, *meas)
        with locked_batch(self.agreement_fig):
            self.agreement_fig.data[0].x = pred
            self.agreement_fig.data[0].y = meas
            self.agreement_fig.data[1].x = [lo, hi]
            self.agreement_fig.data[1].y = [lo, hi]

    def search_again(self) -> dict[str, Any]:
        """The binary search with the locked groups fixed, reusing the map; the sliders move to
        its pick, which is marked on the front. Returns the search state.
        """
        ex = self.ex
        if ex.constraints is None or ex.score_func is None or not self.has_map:
            msg = "search again needs constraints, a score_func and a sensitivity map"
            raise NasvizError(msg)
        state = search_with_pins(
            ex.model,
            ex.constraints.to_dict(),
            ex.dummy_input,
            self.pins,
            sensitivity_map=ex.sensitivity_map,
            original_score=self.original_score,
            config={"score_func": ex.score_func, "forward_loop": ex.forward_loop},
        )
        if self.original_score is None:
            self.original_score = state.get("original_score")
        self.search_pick = dict(state["best"]["config"])
        ex.value = self.search_pick
        self.refresh_front()
        self.status.value = html.escape(
            f"search: score {state['best']['score']:.4f} at {self.search_pick}"
        )
        return state

    def _search_clicked(self) -> None:
        self.search_button.disabled = True
        try:
            self.search_again()
        except Exception as e:  # the user's score_func may raise anything: show it
            self.status.value = html.escape(f"search failed: {type(e).__name__}: {e}")
        finally:
            self.search_button.disabled = not self.can_search

    def show_code(self) -> str:
        """The current choice as a Python cell, shown in the text area; returns it."""
        code = config_as_code(self.ex.model, subnet=self.ex.value)
        self.code.value = code
        self.code.layout.display = None
        self.code.layout.height = f"{20 * (code.count(chr(10)) + 2)}px"
        return code

    # -- figures ---------------------------------------------------------------------------------
    def _front_figure(self) -> go.FigureWidget:
        return go.FigureWidget(
            data=[
                go.Scatter(x=[], y=[], mode="lines+markers", name="front", text=[],
                           line={"shape": "hv", "color": COLORS["grow"]},
                           hovertemplate="%{x:.1f}% FLOPs, drop %{y:.4f}<br>%{text}"
                           "<extra>click: set sliders</extra>"),
                # the markers let hovers and clicks through to the front points under them
                go.Scatter(x=[], y=[], mode="markers", name="current choice", hoverinfo="skip",
                           marker={"size": 13, "symbol": "x", "color": COLORS["final"]}),
                go.Scatter(x=[], y=[], mode="markers", name="search's pick", hoverinfo="skip",
                           marker={"size": 14, "symbol": "star", "color": COLORS["feasible"]}),
            ],
            layout=go.Layout(
                title="Pareto front", height=320, width=560,
                xaxis={"title": "FLOPs (% of full)", "ticksuffix": "%"},
                yaxis={"title": "predicted score drop"},
                margin={"l": 60, "r": 10, "t": 40, "b": 40},
                legend={"orientation": "h", "y": -0.25},
            ),
        )  # fmt: skip

    def _agreement_figure(self) -> go.FigureWidget:
        return go.FigureWidget(
            data=[
                go.Scatter(x=[], y=[], mode="markers", name="evaluated",
                           marker={"size": 9, "color": COLORS["candidate"]}),
                go.Scatter(x=[], y=[], mode="lines", name="predicted = measured",
                           line={"dash": "dot", "color": COLORS["limit"]}),
            ],
            layout=go.Layout(
                title="predicted vs measured drop", height=320, width=380,
                xaxis={"title": "predicted (additive)"}, yaxis={"title": "measured"},
                margin={"l": 60, "r": 10, "t": 40, "b": 40}, showlegend=False,
            ),
        )  # fmt: skip


def attach_locks(sliders: Mapping[str, widgets.Widget], locks: Mapping[str, Any]) -> list[Any]:
    """One row per group: its slider and its lock."""
    return [widgets.HBox([slider, locks[name]]) for name, slider in sliders.items()]
