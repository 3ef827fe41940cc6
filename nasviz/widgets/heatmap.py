"""SensitivityHeatmap: the FastNAS sensitivity map as channel groups x kept width, coloured by drop.

The sensitivity map holds, for every channel group (hparam) and every reduced width (choice),
the score drop of the subnet in which only that group is reduced (all others at full width).
Here it is a heatmap:

* **rows** are the channel groups, in search order (first group on top);
* **columns** are the fraction of the group's channels kept (``columns="ratio"``, the default)
  so that groups of different widths line up: a choice sits in the column of its ratio
  ``choice / full width`` on the coarsest grid of 5%, 2.5% or 1% on which no two choices of one
  group share a column (FastNAS derives choices from ratios 0.05, 0.10, ... 1.0, so default
  configs land on the 5% grid); when even 1% is too coarse, every distinct ratio is a column.
  ``columns="width"`` uses absolute channel counts instead. A group without a choice at a column
  leaves that cell empty, grey (nothing is interpolated). The full width is not a column: its
  drop is 0 by definition and it is not in the map.
* **colour** is the score drop (original score - subnet score), red = worse, blue = better,
  white = unchanged (``DROP_COLORSCALE`` with ``zmid=0``).

Hovering a cell shows the group, the width, the kept channels ("24/48"), the score and drop,
and the FLOPs the reduction saves against the full model (``SearchStarted.full_flops``).

``drops="monotone"`` (or the *raw / monotone* toggle) shows the monotone map the searcher's rule
acts on (:func:`nasviz.fastnas.monotone_map`: each drop replaced by the smallest drop of any
narrower width); in both views the cells the monotone map changes (widths the bisection skips)
are marked with a ring.

The heatmap is a search callback and fills in live while the map is computed, with a progress
bar; it also renders from a saved search alone (no model needed), or from a map file
(:meth:`SensitivityHeatmap.from_map_file`, written by ``nv.save_sensitivity_map``).

Example::

    heatmap = SensitivityHeatmap()
    heatmap                                   # show it, then run the search in the next cell
    model, state = nv.prune(model, constraints={"flops": "60%"}, dummy_input=x,
                            config={"score_func": f, "callbacks": [heatmap.callback]})
    SensitivityHeatmap.from_checkpoint("search.pt")   # the same picture, from the file
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

import ipywidgets as widgets
import plotly.graph_objects as go
from typing_extensions import override

from nasviz.errors import NasvizError
from nasviz.fastnas import load_sensitivity_map, monotone_map
from nasviz.search.events import (
    MapEntry,
    MapFinished,
    MapStarted,
    SearchEvent,
    SearchHistory,
    SearchStarted,
)
from nasviz.widgets._base import (
    DROP_COLORSCALE,
    UI_LOCK,
    EventView,
    ProgressBar,
    fmt_delta,
    fmt_flops,
    fmt_kept,
    fmt_pct,
    fmt_score,
    history_of,
    locked_batch,
)

__all__ = ["SensitivityHeatmap"]

Columns = Literal["ratio", "width"]
Drops = Literal["raw", "monotone"]
_GRID_STEPS = (0.05, 0.025, 0.01)


class SensitivityHeatmap(EventView):
    """Channel groups x kept width, coloured by score drop; live or from a saved search.

    Example:
        >>> hm = SensitivityHeatmap().replay(nv.SearchHistory.from_records(state["history"]))
        >>> hm.n_cells == len(hm.sensitivity_map_entries)
        True
    """

    def __init__(
        self, columns: Columns = "ratio", *, title: str | None = None, drops: Drops = "raw"
    ) -> None:
        if columns not in ("ratio", "width"):
            msg = f"columns={columns!r}: use 'ratio' (kept fraction) or 'width'"
            raise NasvizError(msg)
        if drops not in ("raw", "monotone"):
            msg = f"drops={drops!r}: use 'raw' (as scored) or 'monotone'"
            raise NasvizError(msg)
        self.columns: Columns = columns
        self.choices: dict[str, list[int]] = {}
        self.entries: dict[tuple[str, int], MapEntry] = {}
        self.full_flops: float | None = None
        self.original_score: float | None = None
        self.finished: MapFinished | None = None
        self._col_of: dict[tuple[str, int], int] = {}
        self._labels: list[str] = []
        self.fig: Any = go.FigureWidget(
            data=[
                go.Heatmap(
                    z=[],
                    colorscale=DROP_COLORSCALE,
                    zmid=0.0,
                    hoverongaps=False,
                    hovertemplate="%{text}<extra></extra>",
                    colorbar={"title": {"text": "score drop"}},
                    xgap=1,
                    ygap=1,
                    name="sensitivity",
                ),
                go.Scatter(
                    x=[],
                    y=[],
                    mode="markers",
                    name="changed by the monotone map",
                    marker={"symbol": "circle-open", "size": 14, "color": "black"},
                    hovertemplate="the monotone map changes this cell<extra></extra>",
                ),
            ],
            layout={
                "title": {"text": title or "Sensitivity map: score drop per group and width"},
                "xaxis": {"title": {"text": self._x_title()}, "type": "category"},
                "yaxis": {"autorange": "reversed", "type": "category"},
                "margin": {"l": 10, "r": 10, "t": 50, "b": 40},
                "plot_bgcolor": "#d0d0d0",  # grey: the group has no choice at that column
                "height": 320,
            },
        )
        self.progress = ProgressBar("map")
        self.drops_toggle = widgets.ToggleButtons(
            options=[("raw drops", "raw"), ("monotone (as the searcher uses)", "monotone")],
            value=drops,
        )
        self.drops_toggle.observe(lambda _c: self._render(), names="value")
        self.widget = widgets.VBox([self.progress.widget, self.drops_toggle, self.fig])

    # -- constructors from saved searches --------------------------------------------------------
    @classmethod
    def from_history(
        cls, history: SearchHistory | Iterable[SearchEvent], columns: Columns = "ratio"
    ) -> SensitivityHeatmap:
        """The heatmap of a recorded search history."""
        return cls(columns).replay(history_of(history))

    @classmethod
    def from_state(cls, state: Mapping[str, Any], columns: Columns = "ratio") -> SensitivityHeatmap:
        """The heatmap of a searcher's state dict (``nv.prune``'s second return value)."""
        return cls(columns).replay(history_of(state))

    @classmethod
    def from_checkpoint(cls, path: str | Path, columns: Columns = "ratio") -> SensitivityHeatmap:
        """The heatmap of a search checkpoint file (``config["checkpoint"]``), without the model."""
        return cls(columns).replay(history_of(Path(path)))

    @classmethod
    def from_map_file(
        cls, path: str | Path, columns: Columns = "ratio", drops: Drops = "raw"
    ) -> SensitivityHeatmap:
        """The heatmap of a map file (``nv.save_sensitivity_map``): no model, no checkpoint.
        The file must hold the groups' choices (a search state's file does).
        """
        saved = load_sensitivity_map(path)
        if not saved.choices:
            msg = (
                f"map file {str(path)!r} has no 'choices': the heatmap needs each group's widths; "
                "save it from a search state or pass choices= to nv.save_sensitivity_map"
            )
            raise NasvizError(msg)
        view = cls(columns, drops=drops)
        view.choices = {n: list(cs) for n, cs in saved.choices.items()}
        view.original_score = saved.original_score
        view._layout_columns()
        total = sum(len(v) for v in saved.sensitivity_map.values())
        base = math.nan if saved.original_score is None else saved.original_score
        index = 0
        for name, row in saved.sensitivity_map.items():
            for choice, drop in row.items():
                view.entries[(name, choice)] = MapEntry(
                    name, choice, base - drop, drop, math.nan, math.nan, index, total
                )
                index += 1
        view.progress.finish(f"map file: {total} entries")
        view._render()
        return view

    @property
    def drops(self) -> Drops:
        """Which drops are drawn: ``"raw"`` or ``"monotone"``."""
        return "monotone" if self.drops_toggle.value == "monotone" else "raw"

    @property
    def changed_cells(self) -> list[tuple[str, int]]:
        """``(group, width)`` of the cells whose drop the monotone map changes."""
        raw = self.sensitivity_map
        mono = monotone_map(raw)
        return [(n, c) for n, row in raw.items() for c, d in row.items() if mono[n][c] != d]

    # -- events -----------------------------------------------------------------------------------
    @override
    def handle(self, event: SearchEvent) -> None:
        if isinstance(event, SearchStarted):
            self.choices = {n: sorted(int(c) for c in cs) for n, cs in event.hparams.items()}
            self.entries = {}
            self.full_flops = event.full_flops
            self.finished = None
            self._layout_columns()
            self.progress.start(1, f"full model: {fmt_flops(event.full_flops)}")
            self._render()
        elif isinstance(event, MapStarted):
            self.original_score = event.original_score
            self.progress.start(
                event.total,
                f"scoring {event.total} subnets (original score {fmt_score(event.original_score)})",
            )
        elif isinstance(event, MapEntry):
            self.entries[(event.hparam, int(event.choice))] = event
            origin = "from checkpoint" if event.skipped else "scored"
            self.progress.advance(
                1,
                f"{event.index + 1}/{event.total}: {event.hparam}={event.choice} {origin}, "
                f"drop {fmt_delta(event.drop)}",
            )
            if (event.hparam, int(event.choice)) not in self._col_of:
                self.progress.label.value += (
                    f" (not drawn: {event.hparam} was not announced by SearchStarted; attach the "
                    "heatmap before the search starts)"
                )
            self._render()
        elif isinstance(event, MapFinished):
            self.finished = event
            from_ckpt = event.entries - event.n_scored
            self.progress.finish(
                f"map done: {event.entries} entries ({event.n_scored} scored"
                + (f", {from_ckpt} from a checkpoint" if from_ckpt else "")
                + f") in {event.seconds:.1f} s"
            )

    # -- layout -----------------------------------------------------------------------------------
    def _x_title(self) -> str:
        if self.columns == "ratio":
            return "channels kept (fraction of the group's full width)"
        return "channels kept (absolute width)"

    def _layout_columns(self) -> None:
        reduced = {n: [c for c in cs if c != max(cs)] for n, cs in self.choices.items()}
        if self.columns == "width":
            widths = sorted({c for cs in reduced.values() for c in cs})
            index = {w: i for i, w in enumerate(widths)}
            self._labels = [str(w) for w in widths]
            self._col_of = {(n, c): index[c] for n, cs in reduced.items() for c in cs}
            return
        ratio = {(n, c): c / max(self.choices[n]) for n, cs in reduced.items() for c in cs}
        for step in _GRID_STEPS:
            full_bin = round(1.0 / step)
            bins = {k: round(r / step) for k, r in ratio.items()}
            fits = all(
                len({bins[(n, c)] for c in cs}) == len(cs)
                and all(0 < bins[(n, c)] < full_bin for c in cs)
                for n, cs in reduced.items()
            )
            if fits:
                used = sorted(set(bins.values()))
                index = {b: i for i, b in enumerate(used)}
                self._labels = [f"{b * step * 100:.4g}%" for b in used]
                self._col_of = {k: index[b] for k, b in bins.items()}
                return
        exact = {k: round(r, 6) for k, r in ratio.items()}
        used_r = sorted(set(exact.values()))
        index_r = {r: i for i, r in enumerate(used_r)}
        self._labels = [f"{r * 100:.4g}%" for r in used_r]
        self._col_of = {k: index_r[r] for k, r in exact.items()}

    def _cell_text(self, e: MapEntry) -> str:
        full = max(self.choices[e.hparam])
        lines = [
            f"<b>{e.hparam}</b>",
            f"width {e.choice} ({fmt_pct(e.choice, full)} kept)",
            f"kept channels {fmt_kept(e.choice, full)}",
            f"score {fmt_score(e.score)} (drop {fmt_delta(e.drop)})",
        ]
        if self.full_flops:
            saved = self.full_flops - e.flops
            lines.append(
                f"FLOPs {fmt_flops(e.flops)}, saves {fmt_flops(saved)} "
                f"({fmt_pct(saved, self.full_flops)})"
            )
        if e.skipped:
            lines.append("(from a checkpoint)")
        return "<br>".join(lines)

    def _grid(self) -> tuple[list[list[float | None]], list[list[str]]]:
        rows = list(self.choices)
        z: list[list[float | None]] = [[None] * len(self._labels) for _ in rows]
        text = [[""] * len(self._labels) for _ in rows]
        row_of = {n: i for i, n in enumerate(rows)}
        mono = monotone_map(self.sensitivity_map) if self.drops == "monotone" else None
        for key, e in self.entries.items():
            col = self._col_of.get(key)
            if col is None:
                continue
            drop = float(e.drop) if mono is None else mono[key[0]][key[1]]
            z[row_of[key[0]]][col] = drop
            text[row_of[key[0]]][col] = self._cell_text(e) + (
                f"<br>monotone drop {fmt_delta(drop)}" if mono is not None else ""
            )
        return z, text

    def _render(self) -> None:
        z, text = self._grid()
        with locked_batch(self.fig):
            trace = self.fig.data[0]
            trace.x = list(self._labels)
            trace.y = list(self.choices)
            trace.z = z
            trace.text = text
            marks = [k for k in self.changed_cells if k in self._col_of]
            self.fig.data[1].x = [self._labels[self._col_of[k]] for k in marks]
            self.fig.data[1].y = [k[0] for k in marks]
            self.fig.layout.height = max(240, 120 + 36 * len(self.choices))

    # -- results ----------------------------------------------------------------------------------
    @property
    def groups(self) -> list[str]:
        """The row labels (hparam names), top to bottom."""
        return list(self.choices)

    @property
    def column_labels(self) -> list[str]:
        """The x-axis labels, one per column: absolute widths (``columns="width"``) or kept
        percentages such as ``"50%"`` (``"ratio"``); empty before a search starts.
        """
        return list(self._labels)

    @property
    def z(self) -> list[list[float | None]]:
        """The drops as drawn (``None`` = no such choice / not computed yet)."""
        with UI_LOCK:
            return [list(row) for row in self._grid()[0]]

    @property
    def n_cells(self) -> int:
        """How many cells are filled."""
        return sum(v is not None and not math.isnan(v) for row in self.z for v in row)

    @property
    def sensitivity_map_entries(self) -> list[MapEntry]:
        """The map entries received, in arrival order."""
        return list(self.entries.values())

    @property
    def sensitivity_map(self) -> dict[str, dict[int, float]]:
        """``{hparam: {choice: drop}}``, as in the searcher's state."""
        out: dict[str, dict[int, float]] = {}
        for (name, choice), e in self.entries.items():
            out.setdefault(name, {})[choice] = float(e.drop)
        return out

    def __repr__(self) -> str:
        total = sum(len(cs) - 1 for cs in self.choices.values())
        return (
            f"SensitivityHeatmap({len(self.choices)} groups x {len(self._labels)} columns, "
            f"{self.n_cells}/{total} cells filled)"
        )
