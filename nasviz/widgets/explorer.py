"""The subnet explorer: pick a width for every channel group and see the cost move, live.

The module is one piece (over the house ~400 lines): one view whose sliders, cost bars and
*Evaluate* update each other in place through shared widget state; the decision panel, the part
that stands alone, already lives in :mod:`nasviz.widgets._decide`.

A converted model has one hparam per group of coupled channels. :class:`SubnetExplorer` gives each
group a slider over its valid choices, and (given a sensitivity map ``{hparam: {choice: drop}}``)
one global *tolerated drop* slider: every group takes its smallest choice whose score drop is at
most the threshold, the rule FastNAS's binary searcher bisects over. Each change re-estimates the
subnet's FLOPs and parameters with one :class:`~nasviz.profile.CostModel` (built once; the model is
not run) - and, where a latency constraint is given (or a ``latency_model``), its latency predicted
by a measured :class:`~nasviz.search.latency.LatencyModel` - and updates, in place, a bar chart
of kept vs original channels per group and a bar of FLOPs/params (/latency) against the
constraints (red when over). *Evaluate* selects the subnet, re-calibrates BatchNorm on
``forward_loop`` and scores it with ``score_func``; :meth:`SubnetExplorer.export` returns the
chosen subnet as a plain model.

Below the sliders, :class:`~nasviz.widgets._decide.DecisionPanel` (kept in its own module) adds
the predicted score drop (additivity assumption), predicted vs measured after *Evaluate*, the
Pareto front (click a point to set the sliders), a lock per group, *search again* and *show as
code*; :meth:`SubnetExplorer.from_map_file` opens a map saved with ``nv.save_sensitivity_map``.
"""

from __future__ import annotations

import contextlib
import html
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import ipywidgets as widgets
import pandas as pd
import plotly.graph_objects as go
from torch import nn

import nasviz as nv
from nasviz._transaction import transaction
from nasviz.cost.latency import format_latency
from nasviz.errors import NasvizError
from nasviz.fastnas import config_at_drop, drop_levels, load_sensitivity_map
from nasviz.hparam import Hparam
from nasviz.search.constraints import Constraints
from nasviz.search.latency import LatencyModel, build_latency_model
from nasviz.widgets._base import (
    COLORS,
    UI_LOCK,
    ProgressBar,
    View,
    fmt_delta,
    fmt_flops,
    fmt_params,
    fmt_pct,
    fmt_score,
    locked_batch,
)
from nasviz.widgets._decide import DecisionPanel, attach_locks

__all__ = ["SubnetExplorer", "config_at_threshold", "threshold_levels"]

SensitivityMap = Mapping[str, Mapping[Any, float]]
_FMT: dict[str, Callable[[float], str]] = {
    "flops": fmt_flops,
    "params": fmt_params,
    "latency": format_latency,
}


def config_at_threshold(
    sensitivity_map: SensitivityMap, hparams: Mapping[str, Hparam], threshold: float
) -> dict[str, int]:
    """Every hparam at its smallest choice whose drop is at most ``threshold`` (the searcher's
    rule, :func:`nasviz.fastnas.searcher.config_at_drop`).
    """
    return config_at_drop(sensitivity_map, hparams, threshold)


def threshold_levels(sensitivity_map: SensitivityMap) -> list[float]:
    """The distinct tolerated drops at which some group changes width, with 0 (sorted)."""
    return drop_levels(sensitivity_map)


def _level_options(levels: Sequence[float]) -> list[tuple[str, float]]:
    for fmt in (".4g", ".6g", "r"):
        labels = [format(v, fmt) if fmt != "r" else repr(v) for v in levels]
        if len(set(labels)) == len(labels):
            break
    return list(zip(labels, levels))


class SubnetExplorer(View):
    """Sliders per channel group, a tolerated-drop slider, live cost and an Evaluate button.

    Example::

        >>> ex = SubnetExplorer(model, x, constraints={"flops": "60%"},
        ...                     sensitivity_map=state["sensitivity_map"],
        ...                     score_func=val_accuracy, forward_loop=calibrate)
        >>> ex.threshold.value = ex.threshold.options[3][1]   # groups follow the map
        >>> ex.sliders["conv1.out_channels"].value = 16         # or set one group by hand
        >>> ex.estimate, ex.feasible                            # (flops, params), True/False
        >>> ex.evaluate()                                       # select, calibrate BN, score
        >>> small = ex.export()                                 # a plain nn.Module
    """

    def __init__(
        self,
        model: nn.Module,
        dummy_input: Any,
        constraints: Mapping[str, object] | Constraints | None = None,
        sensitivity_map: SensitivityMap | None = None,
        score_func: Callable[[nn.Module], float] | None = None,
        forward_loop: Callable[[nn.Module], Any] | None = None,
        latency_model: LatencyModel | None = None,
        original_score: float | None = None,
        search_pick: Mapping[str, int] | None = None,
    ) -> None:
        self.model = model
        self.dummy_input = dummy_input
        self.score_func = score_func
        self.forward_loop = forward_loop
        space = nv.search_space(model)
        self.hparams = {n: hp for n, hp in space.hparams.items() if hp.is_configurable}
        if not self.hparams:
            msg = (
                "the model has no configurable channel groups to explore; convert it with a "
                "config whose ratios and divisor allow smaller widths and check "
                "nv.search_space(model).static_table() for the reasons"
            )
            raise NasvizError(msg)
        self.sensitivity_map = {
            n: {int(c): float(d) for c, d in v.items()} for n, v in (sensitivity_map or {}).items()
        }
        self.cost_model = nv.CostModel.from_model(model, dummy_input)
        self.full = (self.cost_model.full_flops, self.cost_model.full_params)
        self.constraints = None if constraints is None else Constraints(constraints)
        if latency_model is None and self.constraints is not None and "latency" in self.constraints:
            latency_model, _ = build_latency_model(model, dummy_input, cost_model=self.cost_model)
        self.latency_model = latency_model
        full_latency = None if latency_model is None else latency_model.table.full
        self._full: dict[str, float] = {"flops": self.full[0], "params": self.full[1]}
        if full_latency is not None:
            self._full["latency"] = full_latency
        if self.constraints is not None:
            self.constraints.resolve(self.full[0], self.full[1], full_latency=full_latency)
        self.limits = {} if self.constraints is None else self.constraints.limits
        self.estimate: tuple[int, int] = self.full
        self.latency: float | None = full_latency  # predicted seconds of the chosen subnet
        self.evaluations: list[dict[str, Any]] = []
        self._batch = False

        self.sliders: dict[str, widgets.SelectionSlider] = {
            name: widgets.SelectionSlider(
                options=list(hp.choices),
                value=hp.active,
                description=name,
                continuous_update=False,
                style={"description_width": "240px"},
                layout={"width": "560px"},
            )
            for name, hp in self.hparams.items()
        }
        levels = threshold_levels(self.sensitivity_map)
        self.threshold = widgets.SelectionSlider(
            options=_level_options(levels),
            value=levels[0],
            description="tolerated drop",
            continuous_update=False,
            disabled=not self.sensitivity_map,
            style={"description_width": "240px"},
            layout={"width": "560px"},
        )
        self.cost_label = widgets.HTML("")
        self.channels_fig = self._channels_figure()
        self.cost_fig = self._cost_figure()
        self.evaluate_button = widgets.Button(
            description="Evaluate",
            icon="play",
            button_style="primary",
            disabled=score_func is None,
            tooltip="select the subnet, re-calibrate BN and score it"
            if score_func is not None
            else "pass score_func to evaluate subnets",
        )
        self.progress = ProgressBar("evaluate")
        self.result = widgets.HTML("")

        for slider in self.sliders.values():
            slider.observe(lambda _c: self._changed(), names="value")
        self.threshold.observe(lambda _c: self._apply_threshold(), names="value")
        self.evaluate_button.on_click(lambda _b: self._evaluate_clicked())
        hint = "" if self.sensitivity_map else " (pass sensitivity_map to use it)"
        self.decide = DecisionPanel(self, original_score, search_pick)
        self.widget = widgets.VBox(
            [
                widgets.HBox([self.threshold, widgets.HTML(html.escape(hint))]),
                widgets.VBox(attach_locks(self.sliders, self.decide.locks)),
                self.cost_label,
                self.decide.predicted_label,
                widgets.HBox([self.channels_fig, self.cost_fig]),
                self.decide.widget,
                widgets.HBox([self.evaluate_button, self.progress.widget]),
                self.result,
            ]
        )
        self._changed()

    @classmethod
    def from_search_state(
        cls, model: nn.Module, dummy_input: Any, state: Mapping[str, Any], **kwargs: Any
    ) -> SubnetExplorer:
        """An explorer over a search's sensitivity map, starting at the subnet it chose."""
        best = (state.get("best") or {}).get("config")
        view = cls(
            model,
            dummy_input,
            sensitivity_map=state["sensitivity_map"],
            original_score=state.get("original_score"),
            search_pick=best or None,
            **kwargs,
        )
        if best:
            view.value = best
        return view

    @classmethod
    def from_map_file(
        cls, model: nn.Module, dummy_input: Any, path: str | Path, **kwargs: Any
    ) -> SubnetExplorer:
        """An explorer over a map saved with ``nv.save_sensitivity_map`` (no checkpoint needed)."""
        saved = load_sensitivity_map(path)
        return cls(
            model,
            dummy_input,
            sensitivity_map=saved.sensitivity_map,
            original_score=saved.original_score,
            **kwargs,
        )

    # -- the decision panel (predicted drop, front, pins, code: see widgets/_decide.py) ----------
    @property
    def pins(self) -> dict[str, int]:
        """``{group: width}`` of the locked groups."""
        return self.decide.pins

    def lock(self, name: str, locked: bool = True) -> None:
        """Lock (or unlock) a group at its slider's width."""
        self.decide.locks[name].value = locked

    @property
    def predicted_drop(self) -> float | None:
        """The predicted score drop of the slider setting (additivity assumption)."""
        return self.decide.predicted(self.value)

    # -- the result ------------------------------------------------------------------------------
    @property
    def value(self) -> dict[str, int]:
        """The chosen subnet: ``{hparam name: width}`` for every configurable group."""
        return {name: int(s.value) for name, s in self.sliders.items()}

    @value.setter
    def value(self, config: Mapping[str, int]) -> None:
        unknown = sorted(set(config) - set(self.sliders))
        bad = {
            n: v
            for n, v in config.items()
            if n in self.hparams and v not in self.hparams[n].choices
        }
        if unknown or bad:
            msg = (
                f"not a subnet of this model: unknown groups {unknown}, invalid widths {bad}; "
                f"valid: { {n: list(hp.choices) for n, hp in self.hparams.items()} }"
            )
            raise NasvizError(msg)
        self._set_sliders(config)

    @property
    def feasible(self) -> bool | None:
        """Whether the chosen subnet meets the constraints (``None`` without constraints)."""
        if self.constraints is None:
            return None
        return bool(self.constraints.check(*self.estimate, latency=self.latency))

    def select(self) -> None:
        """Make the chosen subnet the model's active subnet (``nv.select``)."""
        nv.select(self.model, self.value)

    def evaluate(self) -> float:
        """Select the subnet, re-calibrate BatchNorm on ``forward_loop``, score it; returns the
        score (also recorded in :attr:`evaluations` and shown). If any step raises (Ctrl-C
        included), the model is left exactly as it was before (:mod:`nasviz._transaction`).
        """
        if self.score_func is None:
            msg = "evaluate needs a score_func: SubnetExplorer(..., score_func=f)"
            raise NasvizError(msg)
        self.evaluate_button.disabled = True
        calib = "re-calibrating BatchNorm" if self.forward_loop else "eval mode (no forward_loop)"
        # a failed or interrupted Evaluate leaves the model as it was: selection, weights, BN
        # statistics, training flags (the sliders keep the chosen subnet)
        hparams = nv.search_space(self.model).hparams.values()
        try:
            with transaction(self.model, also=hparams):
                self.progress.start(3, "selecting the subnet")
                self.select()
                self.progress.advance(1, calib)
                nv.prep_for_eval(self.model, self.forward_loop)
                self.progress.advance(1, "scoring")
                score = float(self.score_func(self.model))
        except Exception as e:
            self.progress.fail(html.escape(f"{type(e).__name__}: {e}"))
            raise
        finally:
            self.evaluate_button.disabled = False
        self.progress.finish(f"score {fmt_score(score)}")
        flops, params = self.cost_model.estimate(self.value)
        record = {"config": self.value, "flops": flops, "params": params, "score": score}
        self.evaluations.append(self.decide.annotate(record))
        self._show_evaluations()
        self.decide.redraw_agreement()
        return score

    def evaluations_table(self) -> pd.DataFrame:
        """Every evaluated subnet: score, predicted and measured drop, FLOPs, params, widths."""
        keys = ["score", "predicted_drop", "measured_drop", "flops", "params"]
        rows = [{**{k: e.get(k) for k in keys}, **e["config"]} for e in self.evaluations]
        return cast(pd.DataFrame, pd.DataFrame(rows, columns=[*keys, *self.sliders]))

    def export(self, calibrate: bool = True) -> nn.Module:
        """The chosen subnet as a plain model (``nv.export``; the explorer's model stays
        searchable). With ``calibrate`` and a ``forward_loop``, BatchNorm is re-calibrated first.
        """
        self.select()
        if calibrate and self.forward_loop is not None:
            nv.prep_for_eval(self.model, self.forward_loop)
        return nv.export(self.model)

    # -- updates ---------------------------------------------------------------------------------
    def _set_sliders(self, config: Mapping[str, int]) -> None:
        self._batch = True
        try:
            for name, width in config.items():
                self.sliders[name].value = width
        finally:
            self._batch = False
        self._changed()

    def _apply_threshold(self) -> None:
        level = float(self.threshold.value)
        self._set_sliders(config_at_drop(self.sensitivity_map, self.hparams, level, self.pins))

    def _changed(self) -> None:
        if self._batch:
            return
        config = self.value
        flops, params = self.cost_model.estimate(config)
        self.estimate = (flops, params)
        values: dict[str, float] = {"flops": float(flops), "params": float(params)}
        if self.latency_model is not None:
            self.latency = values["latency"] = self.latency_model.predict(config)
        with UI_LOCK:
            self.cost_label.value = self._cost_html(values)
            with locked_batch(self.channels_fig):
                self.channels_fig.data[1].y = list(config.values())
            over = [self._over(k, v) for k, v in values.items()]
            with locked_batch(self.cost_fig):
                bar = self.cost_fig.data[0]
                bar.x = [100.0 * v / self._full[k] for k, v in values.items()]
                bar.marker.color = [COLORS["infeasible" if o else "feasible"] for o in over]
                bar.text = [_FMT[k](v) for k, v in values.items()]
        self.decide.changed(config, flops)

    def _over(self, key: str, value: float) -> bool:
        return key in self.limits and value > self.limits[key]

    def _cost_html(self, values: Mapping[str, float]) -> str:
        parts = []
        for key, value in values.items():
            fmt, full = _FMT[key], self._full[key]
            shown = "latency (predicted)" if key == "latency" else key
            text = f"<b>{shown}</b> {fmt(value)} ({fmt_pct(value, full)} of full)"
            if key in self.limits:
                colour = COLORS["infeasible" if self._over(key, value) else "feasible"]
                sign = ">" if self._over(key, value) else "≤"
                text = (
                    f"<span style='color:{colour}'>{text} {sign} limit "
                    f"{fmt(self.limits[key])}</span>"
                )
            parts.append(text)
        return " &nbsp;·&nbsp; ".join(parts)

    def _show_evaluations(self) -> None:
        df = self.evaluations_table()
        df["flops"] = [fmt_flops(v) for v in df["flops"]]
        df["params"] = [fmt_params(v) for v in df["params"]]
        df["score"] = [fmt_score(v) for v in df["score"]]
        for key in ("predicted_drop", "measured_drop"):
            df[key] = [fmt_delta(v) for v in df[key]]
        self.result.value = df.to_html(index=False, border=0)

    def _evaluate_clicked(self) -> None:
        # the user's score_func may raise anything: the progress bar shows it, not a traceback
        with contextlib.suppress(Exception):
            self.evaluate()

    # -- figures ---------------------------------------------------------------------------------
    def _channels_figure(self) -> go.FigureWidget:
        names = list(self.hparams)
        fig = go.FigureWidget(
            data=[
                go.Bar(
                    x=names,
                    y=[hp.original for hp in self.hparams.values()],
                    name="original",
                    marker_color=COLORS["neutral"],
                    opacity=0.35,
                ),
                go.Bar(
                    x=names,
                    y=[hp.active for hp in self.hparams.values()],
                    name="kept",
                    marker_color=COLORS["grow"],
                ),
            ],
            layout=go.Layout(
                barmode="overlay",
                title="channels kept per group",
                height=340,
                width=560,
                margin={"l": 40, "r": 10, "t": 40, "b": 120},
                xaxis={"tickangle": -40},
                legend={"orientation": "h", "y": 1.08},
            ),
        )
        return fig

    def _cost_figure(self) -> go.FigureWidget:
        keys = list(self._full)
        fig = go.FigureWidget(
            data=[
                go.Bar(
                    y=keys,
                    x=[100.0] * len(keys),
                    orientation="h",
                    textposition="auto",
                    name="subnet",
                    hovertemplate="%{x:.1f}% of full<extra></extra>",
                )
            ],
            layout=go.Layout(
                title="cost vs limit (% of full model)",
                height=220,
                width=380,
                xaxis={"range": [0, 105], "ticksuffix": "%"},
                showlegend=False,
                margin={"l": 60, "r": 10, "t": 40, "b": 30},
            ),
        )
        for i, key in enumerate(keys):
            if key in self.limits:
                x = 100.0 * self.limits[key] / self._full[key]
                fig.add_shape(
                    type="line",
                    x0=x,
                    x1=x,
                    y0=i - 0.45,
                    y1=i + 0.45,
                    line={"color": COLORS["limit"], "width": 3, "dash": "dot"},
                )
        return fig
