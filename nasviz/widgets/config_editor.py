"""The rule-config editor: build a ``FastNASConfig`` glob by glob and see which rule wins where.

A ``FastNASConfig`` holds, per layer type, an ordered list of glob rules (later matches win,
a switched-off rule leaves the matched layers static). :class:`RuleConfigEditor` edits that list
for each of the 16 layer types and shows, live, for every module of a model:
which globs match its qualified name and which rule wins (``config.rule_for``). Each edit is
validated by the config itself; a refused edit shows the field, the value and the fix in a red box
and frames its rule, while :attr:`RuleConfigEditor.value` keeps the last valid config. JSON import
and export round-trip the config, and *Preview search space* converts a copy of the model with the
current config and shows the groups and the static layers with their reasons.
"""

from __future__ import annotations

import contextlib
import copy
import fnmatch
import html
from collections.abc import Callable, Mapping
from typing import Any, cast

import ipywidgets as widgets
import pandas as pd
from pydantic import ValidationError
from torch import nn

import nasviz as nv
from nasviz.config import LAYER_TYPES, LayerConfig, ModeloptBaseRuleConfig
from nasviz.dynamic import dynamic_class_for
from nasviz.errors import NasvizError
from nasviz.widgets._base import COLORS, UI_LOCK, View, html_table
from nasviz.widgets._rule_row import (
    RuleError,
    RuleRow,
    describe_rule,
    glob_error,
    pydantic_error,
)

__all__ = ["RuleConfigEditor", "RuleError", "RuleRow", "html_table"]


def _typed_modules(model: nn.Module | None) -> list[tuple[str, str]]:
    """``(qualified name, layer type)`` of every module of ``model`` a layer type covers."""
    if model is None:
        return []
    out = []
    for name, module in model.named_modules():
        cls = dynamic_class_for(module)
        if cls is not None:
            out.append((name, cls.layer_type))
    return out


class RuleConfigEditor(View):
    """Edit glob rules per layer type; ``value`` is the last valid ``FastNASConfig``.

    Example::

        >>> editor = RuleConfigEditor(model, dummy_input=x)
        >>> editor.layer_type.value = "nn.Conv2d"
        >>> editor.rows()[0].divisor.value = 8           # the "*" rule
        >>> editor.add_rule("nn.Conv2d", "layer1.*", off=True)
        >>> editor.value.rule_for("nn.Conv2d", "layer1.0.conv1").rule is None
        True
        >>> editor.table()                               # which glob wins for each module
    """

    def __init__(
        self,
        model: nn.Module | None = None,
        config: ModeloptBaseRuleConfig | Mapping[str, Any] | None = None,
        *,
        dummy_input: Any = None,
    ) -> None:
        self.model = model
        self.dummy_input = dummy_input
        self._modules = _typed_modules(model)
        self._value: ModeloptBaseRuleConfig = _as_config(config)
        self.error: RuleError | None = None
        self._rows: dict[str, list[RuleRow]] = {}
        self._enabled: dict[str, bool] = {}
        self._listeners: list[Callable[[ModeloptBaseRuleConfig], None]] = []
        self._loading = False

        counts = {lt: sum(1 for _, t in self._modules if t == lt) for lt in LAYER_TYPES}
        options = [(f"{lt} ({counts[lt]} in model)" if model else lt, lt) for lt in LAYER_TYPES]
        first = next((lt for lt in LAYER_TYPES if counts[lt]), "nn.Conv2d")
        self.layer_type = widgets.Dropdown(options=options, value=first, description="layer type")
        self.enabled = widgets.Checkbox(value=True, description="prune this layer type")
        self.rules_box = widgets.VBox()
        self.new_glob = widgets.Text(value="*", description="new glob")
        self.add_button = widgets.Button(description="Add rule", icon="plus")
        self.error_box = widgets.HTML("")
        self.all_types = widgets.Checkbox(value=False, description="all layer types")
        self.table_html = widgets.HTML("")
        self.json_text = widgets.Textarea(layout={"width": "100%", "height": "160px"})
        self.load_button = widgets.Button(description="Load JSON", icon="upload")
        self.export_button = widgets.Button(description="Export JSON", icon="download")
        self.preview_button = widgets.Button(description="Preview search space", icon="eye")
        self.preview_status = widgets.HTML("")
        self.preview_html = widgets.HTML("")
        self.preview_button.disabled = model is None

        self.layer_type.observe(lambda _c: self._show_type(), names="value")
        self.enabled.observe(lambda _c: self._toggle_type(), names="value")
        self.add_button.on_click(lambda _b: self._add_clicked())
        self.all_types.observe(lambda _c: self._render_table(), names="value")
        self.load_button.on_click(lambda _b: self._load_clicked())
        self.export_button.on_click(lambda _b: self._export_clicked())
        self.preview_button.on_click(lambda _b: self._preview_clicked())
        self.widget = widgets.VBox(
            [
                widgets.HBox([self.layer_type, self.enabled]),
                self.rules_box,
                widgets.HBox([self.new_glob, self.add_button]),
                self.error_box,
                widgets.HTML("<b>Which rule wins for each module</b>"),
                self.all_types,
                self.table_html,
                widgets.HTML("<b>JSON</b>"),
                self.json_text,
                widgets.HBox([self.load_button, self.export_button]),
                widgets.HBox([self.preview_button, self.preview_status]),
                self.preview_html,
            ]
        )
        self._load(self._value)

    # -- the result ------------------------------------------------------------------------------
    @property
    def value(self) -> ModeloptBaseRuleConfig:
        """The last valid config (edits that fail validation leave it unchanged)."""
        return self._value

    @value.setter
    def value(self, config: ModeloptBaseRuleConfig | Mapping[str, Any]) -> None:
        self._load(_as_config(config))

    def on_change(self, callback: Callable[[ModeloptBaseRuleConfig], None]) -> None:
        """Call ``callback(config)`` whenever a new valid config replaces :attr:`value`."""
        self._listeners.append(callback)

    def to_json(self) -> str:
        """:attr:`value` as JSON (``FastNASConfig(**json.loads(text))`` rebuilds it)."""
        return self._value.to_json()

    def load_json(self, text: str) -> ModeloptBaseRuleConfig:
        """Replace every rule by the config in ``text``; a bad text raises ``NasvizError``
        (and is shown in the error box) and changes nothing.
        """
        try:
            config = nv.FastNASConfig.model_validate_json(text)
        except ValidationError as e:
            self._show_error(pydantic_error(e, None, None))
            msg = f"the JSON is not a valid FastNASConfig: {self.error}"
            raise NasvizError(msg) from e
        self._load(config)
        return config

    # -- rules -------------------------------------------------------------------------------------
    def rows(self, layer_type: str | None = None) -> list[RuleRow]:
        """The rule rows of ``layer_type`` (default: the selected one), in order."""
        return list(self._rows[layer_type or self.layer_type.value])

    def add_rule(
        self,
        layer_type: str,
        glob: str,
        *,
        off: bool = False,
        rule: LayerConfig | Mapping[str, Any] | None = None,
    ) -> RuleRow:
        """Append a rule (the layer type's defaults, or ``rule``) and select its layer type."""
        cls = LAYER_TYPES[layer_type]
        base = cls(**rule) if isinstance(rule, Mapping) else rule
        row = self._make_row(layer_type, glob, None if off else (base or cls()))
        self._rows[layer_type].append(row)
        self._enabled[layer_type] = True
        self.layer_type.value = layer_type
        self._show_type()
        return row

    def table(self, layer_type: str | None = None) -> pd.DataFrame:
        """One row per module of the model covered by a layer type (``layer_type``: only those):
        the globs that match its name in order, the winner (``rule_for``) and the rule it gets.
        """
        cfg = self._value
        rows = []
        for name, lt in self._modules:
            if layer_type is not None and lt != layer_type:
                continue
            globs = list(cfg.rules(lt) or {})
            match = cfg.rule_for(lt, name)
            no_rule = "type switched off" if cfg.rules(lt) is None else "no glob matches"
            rows.append(
                {
                    "module": name,
                    "layer_type": lt,
                    "matched_by": [g for g in globs if fnmatch.fnmatchcase(name, g)],
                    "winner": match.pattern,
                    "pruned": match.enabled,
                    "rule": describe_rule(match.rule) if match.pattern is not None else no_rule,
                }
            )
        cols = ["module", "layer_type", "matched_by", "winner", "pruned", "rule"]
        return cast(pd.DataFrame, pd.DataFrame(rows, columns=cols))

    def preview(self) -> Any:
        """Convert a deep copy of the model with :attr:`value`; return its ``SearchSpace``."""
        if self.model is None:
            msg = "preview needs a model: RuleConfigEditor(model, dummy_input=x)"
            raise NasvizError(msg)
        clone = copy.deepcopy(self.model)
        nv.convert(clone, mode=[("fastnas", self._value)], dummy_input=self.dummy_input)
        return nv.search_space(clone)

    # -- internals -------------------------------------------------------------------------------
    def _make_row(self, layer_type: str, glob: str, rule: LayerConfig | None) -> RuleRow:
        return RuleRow(layer_type, glob, rule, self._refresh, self._move, self._remove)

    def _load(self, config: ModeloptBaseRuleConfig) -> None:
        self._loading = True
        try:
            for lt in LAYER_TYPES:
                rules = config.rules(lt)
                self._enabled[lt] = rules is not None
                self._rows[lt] = [self._make_row(lt, g, r) for g, r in (rules or {}).items()]
        finally:
            self._loading = False
        self._show_type()

    def _show_type(self) -> None:
        lt = self.layer_type.value
        self._loading = True
        try:
            self.enabled.value = self._enabled[lt]
        finally:
            self._loading = False
        self.rules_box.children = [r.widget for r in self._rows[lt]] if self._enabled[lt] else []
        self.add_button.disabled = not self._enabled[lt]
        self._refresh()

    def _toggle_type(self) -> None:
        if self._loading:
            return
        lt = self.layer_type.value
        self._enabled[lt] = bool(self.enabled.value)
        if self._enabled[lt] and not self._rows[lt]:
            self._rows[lt].append(self._make_row(lt, "*", LAYER_TYPES[lt]()))
        self._show_type()

    def _move(self, row: RuleRow, delta: int) -> None:
        rows = self._rows[row.layer_type]
        i = rows.index(row)
        j = min(max(i + delta, 0), len(rows) - 1)
        rows[i], rows[j] = rows[j], rows[i]
        self._show_type()

    def _remove(self, row: RuleRow) -> None:
        self._rows[row.layer_type].remove(row)
        self._show_type()

    def _build(self) -> tuple[ModeloptBaseRuleConfig | None, RuleError | None, RuleRow | None]:
        data: dict[str, Any] = {}
        for lt, rows in self._rows.items():
            if not self._enabled[lt]:
                data[lt] = None
                continue
            rules: dict[str, Any] = {}
            for row in rows:
                glob = row.glob.value
                if row.parse_error is not None:
                    return None, RuleError(lt, glob, *row.parse_error), row
                if glob in rules:
                    msg = f"glob {glob!r} is used twice; merge the two rules or change one glob"
                    return None, RuleError(lt, glob, "glob", glob, msg), row
                rule = row.rule_data()
                if rule is not None:
                    try:
                        row.config_class(**rule)
                    except ValidationError as e:
                        return None, pydantic_error(e, lt, glob), row
                glob_problem = glob_error(lt, glob)
                if glob_problem is not None:
                    return None, RuleError(lt, glob, "glob", glob, glob_problem), row
                rules[glob] = rule
            data[lt] = rules
        try:
            return nv.FastNASConfig(**data), None, None
        except ValidationError as e:  # not expected after the per-rule checks
            return None, pydantic_error(e, None, None), None

    def _refresh(self) -> None:
        if self._loading:
            return
        with UI_LOCK:
            config, error, bad_row = self._build()
            for rows in self._rows.values():
                for row in rows:
                    row.set_error(row is bad_row)
            changed = False
            if error is None and config is not None:
                changed = config != self._value
                self._value = config
            self._show_error(error)
            self._render_table()
        if changed:
            for callback in self._listeners:
                callback(self._value)

    def _show_error(self, error: RuleError | None) -> None:
        self.error = error
        self.error_box.value = "" if error is None else error.to_html()

    def _render_table(self) -> None:
        lt = self.layer_type.value
        full = self.table()
        for row in self._rows[lt]:
            names = [n for n, t in self._modules if t == lt]
            n_match = sum(fnmatch.fnmatchcase(n, row.glob.value) for n in names)
            n_win = int((full["winner"] == row.glob.value)[full["layer_type"] == lt].sum())
            row.matches.value = f"<span>matches {n_match} · wins {n_win}</span>"
        if self.model is None:
            self.table_html.value = "<i>pass a model to see which rule wins for its modules</i>"
            return
        df = full if self.all_types.value else full[full["layer_type"] == lt]
        if df.empty:
            self.table_html.value = f"<i>the model has no {html.escape(lt)} modules</i>"
            return
        grey = f"color:{COLORS['neutral']}"
        styles = ["" if pruned else grey for pruned in df["pruned"]]
        self.table_html.value = html_table(df, styles)

    def _add_clicked(self) -> None:
        self.add_rule(self.layer_type.value, self.new_glob.value)

    def _load_clicked(self) -> None:
        with contextlib.suppress(NasvizError):  # shown in the error box
            self.load_json(self.json_text.value)

    def _export_clicked(self) -> None:
        self.json_text.value = self.to_json()

    def _preview_clicked(self) -> None:
        self.preview_button.disabled = True
        self.preview_status.value = "converting a copy of the model ..."
        try:
            space = self.preview()
        except NasvizError as e:
            self.preview_status.value = (
                f"<span style='color:{COLORS['infeasible']}'>{html.escape(str(e))}</span>"
            )
            return
        finally:
            self.preview_button.disabled = False
        self.preview_status.value = html.escape(repr(space))
        groups = space.table()[["name", "original", "choices", "members"]]
        static = space.static_table()
        self.preview_html.value = (
            f"<b>Channel groups</b>{html_table(groups)}"
            f"<b>Static layer dimensions and why</b>{html_table(static)}"
        )


def _as_config(config: ModeloptBaseRuleConfig | Mapping[str, Any] | None) -> Any:
    if config is None:
        return nv.FastNASConfig()
    if isinstance(config, ModeloptBaseRuleConfig):
        return config
    try:
        return nv.FastNASConfig(**config)
    except ValidationError as e:
        problem = pydantic_error(e, None, None)
        msg = f"config is not a valid FastNASConfig: {problem}"
        raise NasvizError(msg) from e
