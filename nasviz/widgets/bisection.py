"""BisectionAnimation: FastNAS's binary search, step by step, against the constraint.

The module is one piece (over the house ~400 lines): one figure whose two panels, frame
slider and explanation text are all drawn from the same timeline of search events.

After the sensitivity map, the binary searcher bisects the tolerated score drop: at each step
every group takes its smallest width whose drop is within ``mid``; a candidate that meets the
constraints moves ``hi`` down to ``mid``, one that does not moves ``lo`` up. Then it grows the
result into the unused budget, scores a few candidates for real and keeps the best
(:mod:`nasviz.fastnas.searcher`).

The animation is one figure with a shared x axis, the **timeline** of the search: bisection
steps, then grow steps, then the scored candidates, then the final choice.

* top: the interval ``[lo, hi]`` as a shaded band and ``mid`` as a marker per bisection step,
  green when the candidate at ``mid`` fits the budget, red when it does not;
* bottom: each candidate's FLOPs (or params, or latency where a latency constraint exists: the
  toggle; bisection steps show the predicted latency, the final choice the measured one) against
  a horizontal line at the constraint limit (``SearchStarted.limits``), bisection candidates
  coloured the same way, grow steps in blue, scored candidates in purple (labelled with their
  real score), the final choice as an orange star;
* a vertical line marks the current frame; the text under the figure explains it.

Frame ``k`` shows the first ``k`` timeline items (frame 0: nothing yet). ``Play`` + slider
(linked in the kernel) and the step buttons move through frames. Live (as a search callback)
the animation follows the newest item while the slider sits at the end; it replays from a
search state, a checkpoint file or a :class:`~nasviz.search.events.SearchHistory`.

Example::

    anim = BisectionAnimation()
    anim                                  # show it, then run the search in the next cell
    model, state = nv.prune(model, constraints={"flops": "60%"}, dummy_input=x,
                            config={"score_func": f, "callbacks": [anim.callback]})
    BisectionAnimation.from_state(state).frame = 3     # replay: the third bisection step
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import ipywidgets as widgets
import plotly.graph_objects as go
from plotly.subplots import make_subplots
from typing_extensions import override

from nasviz.cost.latency import format_latency
from nasviz.errors import NasvizError
from nasviz.search.events import (
    BisectionStep,
    CandidateScored,
    FinalScore,
    GrowStep,
    MapEntry,
    MapFinished,
    SearchEvent,
    SearchFinished,
    SearchHistory,
    SearchStarted,
)
from nasviz.widgets._base import (
    COLORS,
    UI_LOCK,
    EventView,
    fmt_flops,
    fmt_params,
    fmt_score,
    history_of,
    locked_batch,
)

__all__ = ["BisectionAnimation"]

Metric = Literal["flops", "params", "latency"]
TimelineEvent = BisectionStep | GrowStep | CandidateScored | FinalScore
# trace indices (fixed order)
LO, HI, MID, BISECT, GROW, CAND, FINAL = range(7)
_KINDS: dict[int, type] = {
    BISECT: BisectionStep,
    GROW: GrowStep,
    CAND: CandidateScored,
    FINAL: FinalScore,
}


@dataclass(frozen=True)
class _Item:
    x: int
    event: TimelineEvent


def _fmt_config(config: Mapping[str, int]) -> str:
    return ", ".join(f"{k}={v}" for k, v in config.items()) or "—"


def _line(
    name: str, refs: str, xs: tuple[float, float], ys: tuple[float, float], **line: Any
) -> Any:
    """A line shape; ``refs`` = "xref yref"."""
    xref, yref = refs.rsplit(" ", 1)
    ends = dict(zip(("x0", "x1", "y0", "y1"), (*xs, *ys)))
    return go.layout.Shape(type="line", name=name, xref=xref, yref=yref, line=line, **ends)


class BisectionAnimation(EventView):
    """The binary search's interval and candidates, frame by frame; live or replayed.

    Example:
        >>> anim = BisectionAnimation.from_state(state)
        >>> anim.slider.max == anim.n_frames
        True
        >>> anim.next_button.click(); anim.frame
        1
    """

    def __init__(self, metric: Metric | None = None, *, interval_ms: int = 500) -> None:
        if metric not in (None, "flops", "params", "latency"):
            msg = f"metric={metric!r}: use 'flops', 'params', 'latency' or None (the limit's)"
            raise NasvizError(msg)
        self.items: list[_Item] = []
        self.limits: dict[str, float] = {}
        self.final: FinalScore | None = None
        self._metric_fixed = metric is not None
        self.fig: Any = self._make_figure()
        self.play = widgets.Play(value=0, min=0, max=0, step=1, interval=interval_ms)
        self.slider = widgets.IntSlider(value=0, min=0, max=0, description="frame")
        widgets.link((self.play, "value"), (self.slider, "value"))
        buttons = []
        for label, tip, target in (
            ("⏮", "first frame", lambda: 0),
            ("◀ step", "previous frame", lambda: self.slider.value - 1),
            ("step ▶", "next frame", lambda: self.slider.value + 1),
            ("⏭", "last frame", lambda: self.slider.max),
        ):
            button = widgets.Button(description=label, tooltip=tip, layout={"width": "80px"})
            button.on_click(lambda _b, target=target: self._go(target()))
            buttons.append(button)
        self.first_button, self.prev_button, self.next_button, self.last_button = buttons
        options = ["flops", "params"] + (["latency"] if metric == "latency" else [])
        self.metric_toggle = widgets.ToggleButtons(options=options, value="flops")
        self.metric_toggle.style.button_width = "70px"
        if metric is not None:
            self.metric_toggle.value = metric
        self._quiet = False
        self.metric_toggle.observe(self._on_change, names="value")
        self.slider.observe(self._on_change, names="value")
        self.status = widgets.HTML("waiting for the search to start")
        self.detail = widgets.HTML("")
        controls = widgets.HBox([self.play, *buttons, self.slider, self.metric_toggle])
        self.widget = widgets.VBox([self.status, self.fig, controls, self.detail])

    # -- constructors from saved searches --------------------------------------------------------
    @classmethod
    def from_history(
        cls, history: SearchHistory | Iterable[SearchEvent], metric: Metric | None = None
    ) -> BisectionAnimation:
        """The animation of a recorded search history (shown at its last frame)."""
        return cls(metric).replay(history_of(history))

    @classmethod
    def from_state(
        cls, state: Mapping[str, Any], metric: Metric | None = None
    ) -> BisectionAnimation:
        """The animation of a searcher's state dict (``nv.prune``'s second return value)."""
        return cls(metric).replay(history_of(state))

    @classmethod
    def from_checkpoint(cls, path: str | Path, metric: Metric | None = None) -> BisectionAnimation:
        """The animation of a search checkpoint file (``config["checkpoint"]``)."""
        return cls(metric).replay(history_of(Path(path)))

    # -- figure -----------------------------------------------------------------------------------
    def _make_figure(self) -> Any:
        base = make_subplots(
            rows=2,
            cols=1,
            shared_xaxes=True,
            vertical_spacing=0.08,
            row_heights=[0.45, 0.55],
            subplot_titles=("tolerated score drop: interval [lo, hi] and mid", "candidate cost"),
        )
        fig = go.FigureWidget(base)
        band = {"mode": "lines", "line": {"color": COLORS["neutral"], "width": 1, "shape": "hv"}}
        for name, row, kw in (
            ("lo", 1, {**band, "hoverinfo": "skip", "showlegend": False}),
            ("interval [lo, hi]", 1, {**band, "hoverinfo": "skip", "fill": "tonexty"}),
            ("mid", 1, {"mode": "markers", "marker": {"size": 10}}),
            ("bisection", 2, {"mode": "markers", "marker": {"size": 10}}),
            ("grow", 2, {"mode": "markers+lines", "marker": {"size": 9, "color": COLORS["grow"]}}),
            ("scored", 2, {"mode": "markers+text", "marker": {"color": COLORS["candidate"]}}),
            ("final", 2, {"mode": "markers", "marker": {"size": 18, "symbol": "star"}}),
        ):
            trace = go.Scatter(name=name, hovertemplate="%{text}<extra></extra>", **kw)
            fig.add_trace(trace, row, 1)
        fig.data[HI].fillcolor = COLORS["interval"]
        fig.data[CAND].update(marker_size=11, textposition="top center")
        fig.data[FINAL].marker.color = COLORS["final"]
        fig.update_layout(
            height=520,
            margin={"l": 10, "r": 10, "t": 40, "b": 40},
            legend={"orientation": "h", "y": -0.12, "traceorder": "normal"},
        )
        fig.update_xaxes(
            title_text="search step (bisection, grow, scored candidates, final)", row=2
        )
        return fig

    # -- events -----------------------------------------------------------------------------------
    @override
    def handle(self, event: SearchEvent) -> None:
        if isinstance(event, SearchStarted):
            self.items = []
            self.final = None
            self.limits = dict(event.limits)
            if "latency" in self.limits and "latency" not in self.metric_toggle.options:
                self.metric_toggle.options = [*self.metric_toggle.options, "latency"]
            if not self._metric_fixed:
                self.metric_toggle.value = (
                    "latency"
                    if "latency" in self.limits
                    else "params"
                    if set(self.limits) == {"params"}
                    else "flops"
                )
            limits = ", ".join(f"{k} <= {self._fmt(k, v)}" for k, v in self.limits.items())
            self.status.value = f"search started: {limits}; computing the sensitivity map"
            self._set_frames(0)
        elif isinstance(event, MapEntry):
            self.status.value = (
                f"sensitivity map {event.index + 1}/{event.total}: {event.hparam}={event.choice}"
            )
        elif isinstance(event, MapFinished):
            self.status.value = f"sensitivity map done ({event.entries} entries); bisecting"
        elif isinstance(event, (BisectionStep, GrowStep, CandidateScored, FinalScore)):
            self.items.append(_Item(len(self.items), event))
            if isinstance(event, FinalScore):
                self.final = event
            self.status.value = self._phase_text()
            self._set_frames(len(self.items))
        elif isinstance(event, SearchFinished):
            self.status.value = (
                f"search finished in {event.seconds:.1f} s: best score "
                f"{fmt_score(event.best_score)}, {self._phase_text()}"
            )

    def _set_frames(self, n: int) -> None:
        """Extend the controls to ``n`` frames; follow the newest one when at the end."""
        following = self.slider.value >= self.slider.max
        target = n if following or self.slider.value > n else int(self.slider.value)
        self._quiet = True  # one render below, not one per trait change
        try:
            if n >= self.slider.max:
                self.play.max = self.slider.max = n
                self.slider.value = target
            else:
                self.slider.value = target
                self.play.max = self.slider.max = n
        finally:
            self._quiet = False
        self._render()

    def _on_change(self, _change: Any) -> None:
        if not self._quiet:
            self._render()

    def _go(self, frame: int) -> None:
        with UI_LOCK:
            self.slider.value = max(0, min(int(frame), self.slider.max))

    # -- rendering --------------------------------------------------------------------------------
    @property
    def metric(self) -> Metric:
        """The cost plotted: ``"flops"``, ``"params"`` or ``"latency"`` (the toggle's value)."""
        value: Metric = self.metric_toggle.value
        return value

    def _fmt(self, metric: str, value: float) -> str:
        if metric == "latency":
            return format_latency(value)
        return fmt_flops(value) if metric == "flops" else fmt_params(value)

    def _phase_text(self) -> str:
        n = Counter(type(it.event) for it in self.items)
        return (
            f"{n[BisectionStep]} bisection steps, {n[GrowStep]} grow steps, "
            f"{n[CandidateScored]} scored candidates" + (" + final choice" if self.final else "")
        )

    def _cost(self, e: TimelineEvent) -> float:
        """The shown metric of ``e``; latency: predicted for a bisection step, measured for the
        final choice, NaN (not drawn) for events that carry none.
        """
        if self.metric == "latency":
            value = getattr(e, "latency", None)
            return math.nan if value is None else float(value)
        return float(e.flops if self.metric == "flops" else e.params)

    def _hover(self, e: TimelineEvent) -> str:
        m = self.metric
        if math.isnan(self._cost(e)):
            return self._hover_text(e, f"{m}: not measured")
        how = " (measured)" if isinstance(e, FinalScore) else " (predicted)"
        cost = f"{m}{how if m == 'latency' else ''}: {self._fmt(m, self._cost(e))}"
        if m in self.limits:
            fits = self._cost(e) <= self.limits[m]
            cost += f" (limit {self._fmt(m, self.limits[m])}: {'fits' if fits else 'too big'})"
        return self._hover_text(e, cost)

    def _hover_text(self, e: TimelineEvent, cost: str) -> str:
        if isinstance(e, BisectionStep):
            head = (
                f"<b>bisection step {e.step}</b><br>interval [{e.lo:.4g}, {e.hi:.4g}], "
                f"mid {e.mid:.4g}<br>{'feasible' if e.feasible else 'infeasible'}"
            )
            return f"{head}<br>{cost}<br>{_fmt_config(e.config)}"
        if isinstance(e, GrowStep):
            return (
                f"<b>grow {e.hparam}</b>: {e.old} -> {e.new}<br>predicted drop "
                f"{e.predicted_drop:.4g}<br>{cost}"
            )
        if isinstance(e, CandidateScored):
            return (
                f"<b>scored candidate {e.rank + 1}</b><br>real score {fmt_score(e.score)}, "
                f"predicted drop {e.predicted_drop:.4g}<br>{cost}<br>{_fmt_config(e.config)}"
            )
        return (
            f"<b>final choice</b><br>score {fmt_score(e.score)} "
            f"(original {fmt_score(e.original_score)})<br>{cost}<br>{_fmt_config(e.config)}"
        )

    def _render(self) -> None:
        # note: inside batch_update, trace properties read back their old values: compute here
        with UI_LOCK:
            shown = self.items[: self.slider.value]
            cols: dict[int, tuple[list[int], list[float], list[str]]] = {}
            for idx, kind in _KINDS.items():
                its = [it for it in shown if isinstance(it.event, kind)]
                cols[idx] = (
                    [it.x for it in its],
                    [self._cost(it.event) for it in its],
                    [self._hover(it.event) for it in its],
                )
            steps = [it.event for it in shown if isinstance(it.event, BisectionStep)]
            feas = [COLORS["feasible" if s.feasible else "infeasible"] for s in steps]
            scores = [
                fmt_score(it.event.score) for it in shown if isinstance(it.event, CandidateScored)
            ]
            xb, _, text = cols[BISECT]
            with locked_batch(self.fig):
                d = self.fig.data
                for idx, (x, y, hover) in cols.items():
                    d[idx].update(x=x, y=y, text=hover)
                d[BISECT].marker.color = feas
                d[LO].update(x=xb, y=[s.lo for s in steps])
                d[HI].update(x=xb, y=[s.hi for s in steps])
                d[MID].update(x=xb, y=[s.mid for s in steps], text=text, marker={"color": feas})
                d[CAND].texttemplate = scores or None
                self._draw_shapes()
            self.detail.value = (
                self._hover(shown[-1].event).replace("<br>", " · ") if shown else "frame 0"
            )

    def _draw_shapes(self) -> None:
        m = self.metric
        shapes: list[Any] = []
        annotations = [a for a in self.fig.layout.annotations if a.name != "limit"]
        if m in self.limits:
            y = self.limits[m]
            shapes.append(
                _line("limit", "x2 domain y2", (0, 1), (y, y), color=COLORS["limit"], dash="dash")
            )
            annotations.append(
                go.layout.Annotation(
                    name="limit",
                    text=f"limit {self._fmt(m, y)}",
                    xref="x2 domain",
                    yref="y2",
                    x=0,
                    y=y,
                    xanchor="left",
                    yanchor="bottom",
                    showarrow=False,
                )
            )
        if self.slider.value > 0:
            x = self.items[self.slider.value - 1].x
            shapes.append(
                _line("frame", "x paper", (x, x), (0, 1), color=COLORS["neutral"], dash="dot")
            )
        self.fig.layout.shapes = shapes
        self.fig.layout.annotations = annotations
        self.fig.update_yaxes(title_text=m, row=2, col=1)
        # fixed ranges over all frames: points do not jump while the animation plays
        self.fig.update_xaxes(range=[-0.5, max(len(self.items), 1) - 0.5])
        if self.steps:
            lo, hi = min(0.0, *(s.lo for s in self.steps)), max(s.hi for s in self.steps)
            pad = 0.05 * (hi - lo) or 0.01
            self.fig.update_yaxes(range=[lo - pad, hi + pad], row=1)
        costs = [self._cost(it.event) for it in self.items] + [self.limits.get(m, 0.0)]
        top = max((c for c in costs if not math.isnan(c)), default=0.0)
        self.fig.update_yaxes(range=[0.0, 1.1 * top or 1.0], row=2)

    # -- results ----------------------------------------------------------------------------------
    @property
    def n_frames(self) -> int:
        """The last frame index (= the number of timeline items)."""
        return len(self.items)

    @property
    def frame(self) -> int:
        """The frame shown (the slider's value); setting it moves the slider, clamped to
        ``0 .. n_frames``.
        """
        return int(self.slider.value)

    @frame.setter
    def frame(self, value: int) -> None:
        self._go(value)

    @property
    def steps(self) -> list[BisectionStep]:
        """The bisection steps received."""
        return [it.event for it in self.items if isinstance(it.event, BisectionStep)]

    @property
    def limit(self) -> float | None:
        """The constraint limit of the shown metric (``None``: that metric is not constrained)."""
        return self.limits.get(self.metric)

    @property
    def final_config(self) -> dict[str, int] | None:
        """The chosen subnet (``FinalScore.config``), once the search has chosen."""
        return dict(self.final.config) if self.final is not None else None

    def __repr__(self) -> str:
        return f"BisectionAnimation({self._phase_text()}; frame {self.frame}/{self.n_frames})"
