"""One editable glob rule of the config editor, and the error the editor reports for a rule.

A :class:`RuleRow` owns the widgets of one ``{glob: layer config | None}`` entry. The ratio list is
the truth: the range slider and the step *generate* it (``ratio_range``), the text field shows it
and accepts any explicit list (``"0.25, 0.5, 1"``). Rows do not validate against the engine; the
editor does (:mod:`nasviz.widgets.config_editor`), and marks the offending row. A refused rule is
reported as a :class:`RuleError`: layer type, glob, field, value and the config's own message.
"""

from __future__ import annotations

import functools
import html
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import ipywidgets as widgets
from pydantic import ValidationError

from nasviz.config import LAYER_TYPES, LayerConfig
from nasviz.fastnas import FastNASConfig
from nasviz.widgets._base import COLORS

__all__ = [
    "RuleError",
    "RuleRow",
    "describe_rule",
    "format_numbers",
    "glob_error",
    "parse_numbers",
    "pydantic_error",
    "ratio_range",
]

_SLIDER_MIN = 0.05
_BORDER_OK = "1px solid #dddddd"
_BORDER_BAD = "2px solid #d62728"


def ratio_range(low: float, high: float, step: float) -> list[float]:
    """``low, low + step, ... <= high``, rounded: ``(0.5, 1, 0.25) -> [0.5, 0.75, 1]``."""
    if step <= 0:
        return [round(low, 6)]
    n = math.floor((high - low) / step + 1e-9)
    return [round(low + i * step, 6) for i in range(max(n, 0) + 1)]


def format_numbers(values: list[float] | list[int]) -> str:
    """``[0.25, 0.5, 1.0] -> "0.25, 0.5, 1"``."""
    return ", ".join(f"{v:g}" for v in values)


def parse_numbers(text: str, what: str, kind: type = float) -> list[Any]:
    """``"0.25, 0.5 1" -> [0.25, 0.5, 1.0]``; raises ``ValueError`` naming the bad entry."""
    out: list[Any] = []
    for item in text.replace(",", " ").split():
        try:
            out.append(kind(item))
        except ValueError:
            example = "0.25, 0.5, 1" if kind is float else "1, 3, 5"
            msg = (
                f"{what}: {item!r} is not a{'n integer' if kind is int else ' number'}; write "
                f"comma-separated values such as {example}"
            )
            raise ValueError(msg) from None
    return out


@dataclass(frozen=True)
class RuleError:
    """Why the editor's current rules are refused: where (layer type, glob, field), the value
    and the message (which names the fix).
    """

    layer_type: str | None
    glob: str | None
    field: str
    value: Any
    message: str

    def __str__(self) -> str:
        where = self.layer_type or ""
        if self.glob is not None:
            where += f"[{self.glob!r}]"
        name = f"{where}.{self.field}" if where else self.field
        return f"{name} = {self.value!r}: {self.message}"

    def to_html(self) -> str:
        """A red box naming field, value and fix."""
        esc = html.escape
        rule = " ".join(
            [self.layer_type or ""] + ([repr(self.glob)] if self.glob is not None else [])
        )
        where = f"<br><b>rule</b>: {esc(rule)}" if rule.strip() else ""
        return (
            f"<div style='border:1px solid {COLORS['infeasible']};background:#fdecea;"
            f"padding:4px 8px;margin:4px 0'><b>Not applied</b> (the last valid config is kept)"
            f"{where}<br><b>field</b>: {esc(self.field)}<br><b>value</b>: "
            f"<code>{esc(repr(self.value))}</code><br><b>problem and fix</b>: "
            f"{esc(self.message)}</div>"
        )


# the config's nested messages read "nn.Conv2d['*'].channel_divisor: <problem and fix> (input 0)"
_NESTED = re.compile(r"^(nn\.\w+)\[(.+?)\]\.(\w+): (.*?)(?: \(input (.*)\))?$", re.DOTALL)


def pydantic_error(e: ValidationError, layer_type: str | None, glob: str | None) -> RuleError:
    first = e.errors()[0]
    loc = ".".join(str(p) for p in first["loc"]) or "config"
    msg = str(first["msg"]).replace("Value error, ", "")
    nested = _NESTED.match(msg)
    if nested and layer_type is None:
        lt, quoted, field, problem, value = nested.groups()
        return RuleError(lt, quoted.strip("'\""), field, value, problem)
    if layer_type is None and loc in LAYER_TYPES:
        return RuleError(loc, glob, "rules", first.get("input"), msg)
    return RuleError(layer_type, glob, loc, first.get("input"), msg)


@functools.lru_cache(maxsize=1024)
def glob_error(layer_type: str, glob: str) -> str | None:
    """The config's own complaint about ``glob`` (``None`` if it accepts it)."""
    try:
        FastNASConfig(**{layer_type: {glob: None}})
    except ValidationError as e:
        return pydantic_error(e, layer_type, glob).message
    return None


class RuleRow:
    """The widgets of one glob rule of ``layer_type`` (see the module docstring).

    ``on_change()`` is called after every edit; ``on_move(row, delta)`` and ``on_remove(row)``
    after the up/down/remove buttons.
    """

    def __init__(
        self,
        layer_type: str,
        glob: str,
        rule: LayerConfig | None,
        on_change: Callable[[], None],
        on_move: Callable[[RuleRow, int], None],
        on_remove: Callable[[RuleRow], None],
    ) -> None:
        self.layer_type = layer_type
        self.config_class = LAYER_TYPES[layer_type]
        base = rule if rule is not None else self.config_class()
        self._on_change = on_change
        self._syncing = False
        self.ratios: list[float] = list(base.ratios)
        self.kernels: list[int] = list(getattr(base, "kernel_size", []))
        # (field, text, message) of a text that does not parse, per text field
        self._ratio_error: tuple[str, str, str] | None = None
        self._kernel_error: tuple[str, str, str] | None = None

        self.glob = widgets.Text(value=glob, description="glob", continuous_update=False)
        self.off = widgets.Checkbox(value=rule is None, description="switch off", indent=False)
        self.matches = widgets.HTML("")
        self.up = widgets.Button(description="▲", tooltip="move up", layout={"width": "36px"})
        self.down = widgets.Button(description="▼", tooltip="move down", layout={"width": "36px"})
        self.remove = widgets.Button(
            description="✕", tooltip="remove", button_style="warning", layout={"width": "36px"}
        )
        lo, hi = self._bounds(self.ratios)
        self.ratio_slider = widgets.FloatRangeSlider(
            value=(lo, hi), min=_SLIDER_MIN, max=1.0, step=0.05, description="ratios",
            readout_format=".2f", continuous_update=False, layout={"width": "380px"},
        )  # fmt: skip
        self.step = widgets.BoundedFloatText(
            value=self._step_of(self.ratios), min=0.01, max=1.0, step=0.01, description="step",
            layout={"width": "150px"},
        )  # fmt: skip
        self.ratio_text = widgets.Text(
            value=format_numbers(self.ratios), description="list", continuous_update=False
        )
        self.divisor = widgets.IntText(
            value=base.divisor, description="divisor", layout={"width": "160px"}
        )
        self.kernel_text = widgets.Text(
            value=format_numbers(self.kernels), description="kernels", placeholder="e.g. 1, 3",
            continuous_update=False, layout={"width": "200px"},
        )  # fmt: skip
        self.has_kernels = "kernel_size" in self.config_class.model_fields
        line2: list[widgets.Widget] = [self.ratio_slider, self.step, self.ratio_text, self.divisor]
        if self.has_kernels:
            line2.append(self.kernel_text)
        self.widget = widgets.VBox(
            [
                widgets.HBox([self.glob, self.off, self.matches, self.up, self.down, self.remove]),
                widgets.HBox(line2, layout={"flex_flow": "row wrap"}),
            ],
            layout={"border": _BORDER_OK, "padding": "2px", "margin": "2px 0"},
        )
        for w in (self.glob, self.off, self.divisor):
            w.observe(lambda _c: self._changed(), names="value")
        self.ratio_slider.observe(lambda _c: self._from_slider(), names="value")
        self.step.observe(lambda _c: self._from_slider(), names="value")
        self.ratio_text.observe(lambda _c: self._from_text(), names="value")
        self.kernel_text.observe(lambda _c: self._from_kernel_text(), names="value")
        self.up.on_click(lambda _b: on_move(self, -1))
        self.down.on_click(lambda _b: on_move(self, 1))
        self.remove.on_click(lambda _b: on_remove(self))
        self._show_off()

    # -- reading ---------------------------------------------------------------------------------
    def rule_data(self) -> dict[str, Any] | None:
        """The rule as config data (``None`` when switched off); texts must parse first."""
        if self.off.value:
            return None
        cls = self.config_class
        data: dict[str, Any] = {
            cls.ratio_field: list(self.ratios),
            cls.divisor_field: self.divisor.value,
        }
        if self.has_kernels:
            data["kernel_size"] = list(self.kernels)
        return data

    def set_error(self, bad: bool) -> None:
        """Frame the row in red when it holds the current error."""
        self.widget.layout.border = _BORDER_BAD if bad else _BORDER_OK

    # -- syncing ---------------------------------------------------------------------------------
    @staticmethod
    def _bounds(ratios: list[float]) -> tuple[float, float]:
        if not ratios:
            return _SLIDER_MIN, 1.0
        lo = min(max(min(ratios), _SLIDER_MIN), 1.0)
        return lo, min(max(max(ratios), lo), 1.0)

    @staticmethod
    def _step_of(ratios: list[float]) -> float:
        if len(ratios) < 2:
            return 0.05
        return min(max(round(ratios[1] - ratios[0], 6), 0.01), 1.0)

    @property
    def parse_error(self) -> tuple[str, str, str] | None:
        """``(field, text, message)`` if a text field does not parse, else ``None``."""
        return self._ratio_error or self._kernel_error

    def _from_slider(self) -> None:
        if self._syncing:
            return
        lo, hi = self.ratio_slider.value
        self.ratios = ratio_range(lo, hi, self.step.value)
        self._ratio_error = None
        self._syncing = True
        try:
            self.ratio_text.value = format_numbers(self.ratios)
        finally:
            self._syncing = False
        self._changed()

    def _from_text(self) -> None:
        if self._syncing:
            return
        text = self.ratio_text.value
        try:
            self.ratios = parse_numbers(text, "ratios")
            self._ratio_error = None
        except ValueError as e:
            self._ratio_error = (self.config_class.ratio_field, text, str(e))
        else:
            self._syncing = True
            try:
                self.ratio_slider.value = self._bounds(self.ratios)
            finally:
                self._syncing = False
        self._changed()

    def _from_kernel_text(self) -> None:
        text = self.kernel_text.value
        try:
            self.kernels = parse_numbers(text, "kernel sizes", int)
            self._kernel_error = None
        except ValueError as e:
            self._kernel_error = ("kernel_size", text, str(e))
        self._changed()

    def _show_off(self) -> None:
        for w in (self.ratio_slider, self.step, self.ratio_text, self.divisor, self.kernel_text):
            w.disabled = bool(self.off.value)

    def _changed(self) -> None:
        if self._syncing:
            return
        self._show_off()
        self._on_change()


def describe_rule(rule: LayerConfig | None) -> str:
    """A rule in a few words: its ratios, divisor and kernels, or ``"switched off"``."""
    if rule is None:
        return "switched off"
    ratios = rule.ratios
    kernels = getattr(rule, "kernel_size", [])
    extra = f", kernels {format_numbers(kernels)}" if kernels else ""
    span = f"{min(ratios):g}-{max(ratios):g}" if len(ratios) > 1 else f"{ratios[0]:g}"
    return f"ratios {span} ({len(ratios)}), divisor {rule.divisor}{extra}"
