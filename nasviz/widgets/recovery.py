"""RecoveryMonitor: a distillation run, live - training loss and validation score per step.

Two panels over one x axis (optimizer steps):

* left: the training loss of every step;
* right: the validation score after every epoch (and before the first step), against two
  horizontal lines: the **unpruned** model's score (``DistillStarted.teacher_score``) and the
  **pruned, before recovery** score (``DistillStarted.initial_score``).

The monitor is an event view: it draws what the engine's
:class:`~nasviz.recover.events.DistillStep` / ``DistillEpoch`` events say and holds no training
logic. Several runs can share one monitor, each under a label (``monitor.track("fine-tune")`` is
the callback for that run): plain fine-tuning (``alpha=0``) next to distillation.

Given a :class:`~nasviz.recover.Distiller`, its **Stop** button calls ``distiller.stop()`` (the
run stops before its next step) and **Resume** runs ``distiller.run()`` in a background thread
(continuing from the stopped state, optimizer included); :attr:`RecoveryMonitor.result` is the
engine's :class:`~nasviz.recover.DistillResult` once a run returns.

Example::

    d = nv.recover.Distiller(student, teacher, loaders.train, epochs=3,
                             score_loader=loaders.val, metric="accuracy")
    monitor = RecoveryMonitor(d)
    monitor            # in a notebook; press Resume (or call monitor.start())
"""

from __future__ import annotations

import html
import math
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import ipywidgets as widgets
import plotly.graph_objects as go
from plotly.subplots import make_subplots
from typing_extensions import override

from nasviz.errors import NasvizError
from nasviz.recover import (
    DistillEpoch,
    Distiller,
    DistillFinished,
    DistillResult,
    DistillStarted,
    DistillStep,
    DistillStopped,
)
from nasviz.search.events import SearchEvent, SearchHistory
from nasviz.widgets._base import COLORS, UI_LOCK, EventView, fmt_score, locked_batch

__all__ = ["RecoveryMonitor"]


@dataclass
class _Run:
    """One labelled run: its two traces and their points."""

    loss_trace: int
    score_trace: int
    loss_x: list[float] = field(default_factory=list)
    loss_y: list[float] = field(default_factory=list)
    score_x: list[float] = field(default_factory=list)
    score_y: list[float] = field(default_factory=list)


_PALETTE = ("#1f77b4", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf")
_DEFAULT = "student"


class RecoveryMonitor(EventView):
    """Loss and validation score of one or more recovery runs, with Stop/Resume.

    Args:
        distiller: the run the buttons control (optional: without one the monitor only draws
            the events it is given).
        label: the label of the events fed to the monitor itself (``monitor`` as a callback).
        title: the figure title.

    Example:
        >>> m = RecoveryMonitor().replay(result.events)
        >>> m.fig.data[m.trace_index("student", "loss")].y == tuple(result.history["loss"])
        True
    """

    def __init__(
        self, distiller: Distiller | None = None, *, label: str = _DEFAULT, title: str | None = None
    ) -> None:
        self.distiller = distiller
        self.label = label
        self.teacher_score: float | None = None
        self.initial_score: float | None = None
        self.total_steps: int | None = None
        self.result: DistillResult | None = None
        self.error: BaseException | None = None
        self.thread: threading.Thread | None = None
        self.runs: dict[str, _Run] = {}
        fig = go.FigureWidget(
            make_subplots(rows=1, cols=2, subplot_titles=("training loss", "validation score"))
        )
        for name, dash in (("unpruned", "dash"), ("pruned, before recovery", "dot")):
            color = COLORS["limit"] if name == "unpruned" else COLORS["infeasible"]
            fig.add_scatter(
                x=[], y=[], mode="lines", name=name, line={"dash": dash, "color": color},
                row=1, col=2,
            )  # fmt: skip
        fig.update_xaxes(title_text="step")
        fig.update_layout(
            title={"text": title or "Recovery"}, height=340, margin={"l": 10, "r": 10, "t": 60}
        )
        self.fig: Any = fig
        self.stop_button = widgets.Button(description="Stop", icon="stop", disabled=True)
        self.resume_button = widgets.Button(
            description="Resume", icon="play", button_style="primary", disabled=distiller is None
        )
        self.stop_button.on_click(lambda _b: self.stop())
        self.resume_button.on_click(lambda _b: self.start())
        self.status = widgets.HTML("<i>waiting for a run</i>")
        self.widget = widgets.VBox(
            [widgets.HBox([self.resume_button, self.stop_button, self.status]), self.fig]
        )
        if distiller is not None:
            distiller.bus.subscribe(self)

    # -- control (engine calls only) ---------------------------------------------------------------
    def start(self) -> threading.Thread:
        """Run (or resume) the distiller in a background thread; returns the thread."""
        d = self.distiller
        if d is None:
            msg = "RecoveryMonitor: no distiller to run; pass one to the constructor"
            raise NasvizError(msg)
        if self.thread is not None and self.thread.is_alive():
            return self.thread

        def work() -> None:
            try:
                self.result = d.run()
                self.error = None
            except BaseException as e:  # shown in the status line; the engine left a clean state
                self.error = e
                self.result = d.result()
            finally:
                with UI_LOCK:
                    self.stop_button.disabled = True
                    self.resume_button.disabled = d.done

        with UI_LOCK:
            self.stop_button.disabled = False
            self.resume_button.disabled = True
        self.thread = threading.Thread(target=work, name="nasviz-distill", daemon=True)
        self.thread.start()
        return self.thread

    def stop(self) -> None:
        """Ask the distiller to stop before its next step."""
        if self.distiller is not None:
            self.distiller.stop()
            self.status.value = "<i>stopping after the current step...</i>"

    # -- events ------------------------------------------------------------------------------------
    def track(self, label: str) -> Callable[[SearchEvent], None]:
        """The callback that draws a run's events under ``label``."""

        def callback(event: SearchEvent) -> None:
            with UI_LOCK:
                self._handle(event, label)

        return callback

    @override
    def handle(self, event: SearchEvent) -> None:
        self._handle(event, self.label)

    def replay_as(
        self, label: str, events: SearchHistory | Iterable[SearchEvent]
    ) -> RecoveryMonitor:
        """Feed a recorded run under ``label``; returns the monitor."""
        cb = self.track(label)
        for event in events.events if isinstance(events, SearchHistory) else events:
            cb(event)
        return self

    def trace_index(self, label: str, kind: str) -> int:
        """Index in ``fig.data`` of a run's ``"loss"`` or ``"score"`` trace."""
        run = self.runs[label]
        return run.loss_trace if kind == "loss" else run.score_trace

    def _run(self, label: str) -> _Run:
        if label not in self.runs:
            color = _PALETTE[len(self.runs) % len(_PALETTE)]
            n = len(self.fig.data)
            with locked_batch(self.fig):
                self.fig.add_scatter(x=[], y=[], mode="lines", name=f"{label} loss",
                                     line={"color": color}, row=1, col=1)  # fmt: skip
                self.fig.add_scatter(x=[], y=[], mode="lines+markers", name=f"{label} score",
                                     line={"color": color}, row=1, col=2)  # fmt: skip
            self.runs[label] = _Run(n, n + 1)
        return self.runs[label]

    def _handle(self, event: SearchEvent, label: str) -> None:
        name = html.escape(label)
        if isinstance(event, DistillStarted):
            run = self._run(label)
            if self.teacher_score is None:
                self.teacher_score = event.teacher_score
            if self.initial_score is None:
                self.initial_score = event.initial_score
            if event.steps_per_epoch:
                self.total_steps = max(self.total_steps or 0, event.epochs * event.steps_per_epoch)
            if not event.resumed and event.initial_score is not None:
                run.score_x, run.score_y = [0.0], [event.initial_score]
            self.status.value = f"{name}: {'resumed' if event.resumed else 'running'}"
        elif isinstance(event, DistillStep):
            run = self._run(label)
            run.loss_x.append(float(event.step))
            run.loss_y.append(event.loss)
            self.status.value = (
                f"{name}: epoch {event.epoch}, step {event.step}, loss {event.loss:.4f}"
            )
        elif isinstance(event, DistillEpoch) and event.score is not None:
            run = self._run(label)
            run.score_x.append(float(event.step))
            run.score_y.append(event.score)
        elif isinstance(event, DistillStopped):
            self.status.value = (
                f"<span style='color:{COLORS['infeasible']}'>{name}: stopped at step "
                f"{event.step} ({html.escape(event.reason)})</span>"
            )
        elif isinstance(event, DistillFinished):
            self.status.value = (
                f"<span style='color:{COLORS['feasible']}'>{name}: done, {event.step} steps, "
                f"score {fmt_score(event.score)} in {event.seconds:.1f} s</span>"
            )
        self._render()

    def _render(self) -> None:
        last = max((x for r in self.runs.values() for x in r.loss_x), default=0.0)
        end = float(max(self.total_steps or 0, last, 1))
        with locked_batch(self.fig):
            for i, value in ((0, self.teacher_score), (1, self.initial_score)):
                ok = value is not None and math.isfinite(value)
                self.fig.data[i].x = (0.0, end) if ok else ()
                self.fig.data[i].y = (value, value) if ok else ()
            for r in self.runs.values():
                self.fig.data[r.loss_trace].x = tuple(r.loss_x)
                self.fig.data[r.loss_trace].y = tuple(r.loss_y)
                self.fig.data[r.score_trace].x = tuple(r.score_x)
                self.fig.data[r.score_trace].y = tuple(r.score_y)
