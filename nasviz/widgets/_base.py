"""Shared conventions of the notebook layer: views, search-event views, progress, colours, numbers.

A **view** is a plain Python object that owns one ipywidgets container in ``.widget`` and shows
it when it is the value of a notebook cell (``_ipython_display_`` / ``_repr_mimebundle_``). It
takes engine objects in its constructor and exposes its result as engine objects; it holds no
pruning logic.

An **event view** is also a search callback: pass it (or ``view.callback``, the same object) in
``config={"callbacks": [view]}`` of ``nv.prune`` / ``BinarySearcher.search`` and every
:class:`~nasviz.search.events.SearchEvent` updates it in place; :meth:`EventView.replay` feeds it
a recorded history instead. Events may arrive from a thread other than the one that handles
widget interaction, so every update runs under one re-entrant lock (:data:`UI_LOCK`, used by
:func:`locked_batch` for plotly ``FigureWidget`` updates).

Example::

    class Counter(EventView):
        def __init__(self) -> None:
            self.n = 0
            self.label = widgets.HTML("0 events")
            self.widget = widgets.VBox([self.label])

        def handle(self, event: SearchEvent) -> None:
            self.n += 1
            self.label.value = f"{self.n} events"
"""

from __future__ import annotations

import html
import threading
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import ipywidgets as widgets
import pandas as pd
from torch import nn

from nasviz.errors import NasvizError
from nasviz.profile import format_flops, format_params
from nasviz.search.checkpoint import load_search_state
from nasviz.search.events import SearchEvent, SearchHistory
from nasviz.space import search_space

__all__ = [
    "COLORS",
    "DROP_COLORSCALE",
    "UI_LOCK",
    "EventView",
    "ProgressBar",
    "View",
    "fmt_delta",
    "fmt_flops",
    "fmt_kept",
    "fmt_params",
    "fmt_pct",
    "fmt_score",
    "has_search_space",
    "history_of",
    "html_table",
    "load_search_state",
    "locked_batch",
]

#: One lock for every widget update that may come from a search thread.
UI_LOCK = threading.RLock()

#: Score drop (original - subnet score): blue = the subnet scores better, white = no change,
#: red = worse. Use with ``zmid=0``.
DROP_COLORSCALE = "RdBu_r"

#: Named colours shared by all views (plotly accepts any CSS colour).
COLORS: dict[str, str] = {
    "feasible": "#2ca02c",
    "infeasible": "#d62728",
    "final": "#ff7f0e",
    "limit": "#444444",
    "grow": "#1f77b4",
    "candidate": "#9467bd",
    "interval": "rgba(31, 119, 180, 0.25)",
    "neutral": "#7f7f7f",
}

_V = TypeVar("_V", bound="EventView")

fmt_flops = format_flops
fmt_params = format_params


def fmt_score(value: float | None) -> str:
    """``0.97123 -> "0.9712"``; ``None -> "—"``."""
    return "—" if value is None else f"{value:.4f}"


def fmt_delta(value: float | None) -> str:
    """A signed score difference: ``0.0123 -> "+0.0123"``."""
    return "—" if value is None else f"{value:+.4f}"


def fmt_pct(value: float, total: float) -> str:
    """``value`` as a percentage of ``total``: ``(30, 120) -> "25.0%"``."""
    return "—" if total == 0 else f"{100.0 * value / total:.1f}%"


def fmt_kept(kept: int, original: int) -> str:
    """Channels kept of the original: ``(24, 48) -> "24/48"``."""
    return f"{kept}/{original}"


@contextmanager
def locked_batch(fig: Any) -> Iterator[Any]:
    """Update a plotly ``FigureWidget`` under :data:`UI_LOCK` and in one ``batch_update``."""
    with UI_LOCK, fig.batch_update():
        yield fig


class View:
    """Base of every view: ``.widget`` is the ipywidgets container shown for the view."""

    widget: Any

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)


class EventView(View):
    """A view that is a search callback (see the module docstring)."""

    def __call__(self, event: SearchEvent) -> None:
        with UI_LOCK:
            self.handle(event)

    @property
    def callback(self) -> EventView:
        """The callback to pass in ``config={"callbacks": [...]}`` (the view itself)."""
        return self

    def handle(self, event: SearchEvent) -> None:
        """Update the view for one event (override; ignore events you do not show)."""
        raise NotImplementedError

    def replay(self: _V, events: SearchHistory | Iterable[SearchEvent]) -> _V:
        """Feed recorded events in order; returns the view."""
        for event in events.events if isinstance(events, SearchHistory) else events:
            self(event)
        return self


class ProgressBar(View):
    """An ``IntProgress`` with a status text, for long work (a search, a calibration)."""

    def __init__(self, description: str = "") -> None:
        self.bar = widgets.IntProgress(value=0, min=0, max=1, description=description)
        self.label = widgets.HTML("")
        self.widget = widgets.HBox([self.bar, self.label])

    @property
    def value(self) -> int:
        return int(self.bar.value)

    @property
    def total(self) -> int:
        return int(self.bar.max)

    def start(self, total: int, text: str = "", done: int = 0) -> None:
        """Begin (or restart) at ``done`` of ``total``."""
        with UI_LOCK:
            self.bar.max = max(int(total), 1)
            self.bar.value = min(int(done), self.bar.max)
            self.bar.bar_style = "info"
            self.label.value = text

    def advance(self, n: int = 1, text: str | None = None) -> None:
        with UI_LOCK:
            self.bar.value = min(self.bar.value + n, self.bar.max)
            if text is not None:
                self.label.value = text

    def finish(self, text: str = "done") -> None:
        with UI_LOCK:
            self.bar.value = self.bar.max
            self.bar.bar_style = "success"
            self.label.value = text

    def fail(self, text: str) -> None:
        with UI_LOCK:
            self.bar.bar_style = "danger"
            self.label.value = text


def has_search_space(model: nn.Module) -> bool:
    """Whether ``model`` carries a search space (converted, not exported): the one check the
    views use before asking for ``nv.search_space(model)``.

    (``nv.is_converted`` is also true for an exported model, whose modelopt state records the
    export.)
    """
    try:
        search_space(model)
    except NasvizError:
        return False
    return True


def history_of(
    source: SearchHistory
    | Iterable[SearchEvent]
    | Iterable[Mapping[str, Any]]
    | str
    | Path
    | Mapping[str, Any],
) -> SearchHistory:
    """A :class:`SearchHistory` from a history, events, records (``state["history"]``), a state
    dict or a checkpoint path.
    """
    if isinstance(source, SearchHistory):
        return source
    if isinstance(source, (str, Path, Mapping)):
        return SearchHistory.from_records(list(load_search_state(source)["history"]))
    items = list(source)
    if all(isinstance(x, SearchEvent) for x in items):
        return SearchHistory([x for x in items if isinstance(x, SearchEvent)])
    if all(isinstance(x, Mapping) for x in items):
        return SearchHistory.from_records([dict(x) for x in items if isinstance(x, Mapping)])
    msg = (
        "history_of() takes a SearchHistory, SearchEvents, event records, a search state dict or "
        f"a checkpoint path; got a sequence of {sorted({type(x).__name__ for x in items})}"
    )
    raise NasvizError(msg)


def html_table(df: pd.DataFrame, styles: list[str] | None = None) -> str:
    """``df`` as a small HTML table, cells escaped; ``styles[i]`` is row ``i``'s CSS."""
    esc = html.escape
    head = "".join(f"<th style='text-align:left;padding:2px 6px'>{esc(str(c))}</th>" for c in df)
    body = []
    for i, row in enumerate(df.itertuples(index=False)):
        style = styles[i] if styles else ""
        cells = "".join(f"<td style='padding:2px 6px'>{esc(_cell(v))}</td>" for v in row)
        body.append(f"<tr style='{style}'>{cells}</tr>")
    return f"<table style='border-collapse:collapse'><tr>{head}</tr>{''.join(body)}</table>"


def _cell(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value)
    return str(value)
