"""Dashboard: every view over one model and one search, in tabs, following the data flow.

The tabs follow the path a model takes (``convert -> search -> explore -> export``):

* **Config**: the :class:`~nasviz.widgets.config_editor.RuleConfigEditor`. While the model is
  not converted yet, *Convert* converts it with the edited config (in place); afterwards the
  editor shows the config the model was converted with.
* **Search**: the constraint, *Run search* (``nv.prune`` with the data loader and score function,
  the views below as callbacks) and a progress bar, then the live
  :class:`~nasviz.widgets.heatmap.SensitivityHeatmap` and
  :class:`~nasviz.widgets.bisection.BisectionAnimation`.
* **Explore**: the :class:`~nasviz.widgets.explorer.SubnetExplorer`; after a search it starts at
  the chosen subnet with the tolerated-drop slider over the sensitivity map.
* **Activations**: the :class:`~nasviz.widgets.activations.ActivationViewer`, the full model
  against the model's selected subnet; refreshed after each search. The full model is a copy of
  the converted model taken before any search (a search re-calibrates BatchNorm statistics of
  the kept channels in place); given a converted model, pass ``full_model`` (such a copy) or
  get a copy of it at full width.
* **Export**: the :class:`~nasviz.widgets.export_panel.ExportPanel`.

The views on a converted model are built once it is converted; the dashboard holds no pruning
logic and its results are engine objects: :attr:`Dashboard.model`, :attr:`Dashboard.search_state`,
:attr:`Dashboard.config` and, after an export, :attr:`Dashboard.exported`.

Example::

    dash = Dashboard(DigitsCNN(width=32), x, score_func=val_accuracy, data_loader=train_loader,
                     constraints={"flops": "60%"}, factory=lambda: DigitsCNN(width=32))
    dash                      # Config -> Convert, Search -> Run search, Explore, Export
    dash.convert(); dash.run_search(); small = dash.export_panel.export("pruned.pt")
"""

from __future__ import annotations

import copy
import html
import os
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import ipywidgets as widgets
import torch
from torch import nn

import nasviz as nv
from nasviz.errors import NasvizError
from nasviz.patch import calibration_loop
from nasviz.search.events import (
    BisectionStep,
    CandidateScored,
    MapEntry,
    MapStarted,
    SearchEvent,
    SearchFinished,
)
from nasviz.widgets._base import COLORS, ProgressBar, View, fmt_score, has_search_space
from nasviz.widgets.activations import ActivationViewer
from nasviz.widgets.bisection import BisectionAnimation
from nasviz.widgets.config_editor import RuleConfigEditor
from nasviz.widgets.explorer import SubnetExplorer
from nasviz.widgets.export_panel import ExportPanel
from nasviz.widgets.heatmap import SensitivityHeatmap

__all__ = ["TABS", "Dashboard"]

#: the tab titles, in order
TABS = ("Config", "Search", "Explore", "Activations", "Export")


def _placeholder(text: str) -> widgets.HTML:
    return widgets.HTML(f"<i style='color:{COLORS['neutral']}'>{html.escape(text)}</i>")


class Dashboard(View):
    """Config, search, explorer, activations and export views over one model, in tabs.

    Args:
        model: a plain model (convert it from the Config tab or with :meth:`convert`) or a
            converted one.
        dummy_input: an example batch for tracing, FLOPs and the export check.
        score_func: ``model -> float`` (higher is better); needed to search and evaluate.
        data_loader: calibration data for BatchNorm (batches ``(x, y)`` or ``x``).
        constraints: e.g. ``{"flops": "60%"}`` (the default); ``{"params": 1e5}``.
        config: the FastNAS rule config to convert with (default: the editor's default).
        inputs: the batch the activation viewer shows (default: ``dummy_input``).
        search_config: more ``nv.prune`` config keys (``checkpoint``, ``max_iter_data_loader``).
        path / factory: the export panel's default path and fresh-model factory.
        full_model: the unpruned model for the activations (default: a copy of the converted
            model, taken at :meth:`convert`, or at full width when given a converted model).
        search_state: a finished search (``nv.prune``'s second value) to show: its heatmap and
            bisection are replayed and the explorer starts at its chosen subnet.

    Example::

        >>> dash = Dashboard(model, x, score_func=f, data_loader=dl)
        >>> dash.convert(); state = dash.run_search()
        >>> dash.tabs.selected_index = TABS.index("Explore")
    """

    def __init__(
        self,
        model: nn.Module,
        dummy_input: Any,
        score_func: Callable[[nn.Module], float] | None = None,
        data_loader: Iterable[Any] | None = None,
        constraints: Mapping[str, Any] | None = None,
        *,
        config: nv.ModeloptBaseRuleConfig | Mapping[str, Any] | None = None,
        inputs: torch.Tensor | None = None,
        search_config: Mapping[str, Any] | None = None,
        path: str | os.PathLike[str] = "pruned.pt",
        factory: Callable[[], nn.Module] | None = None,
        full_model: nn.Module | None = None,
        search_state: Mapping[str, Any] | None = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            msg = f"model must be a torch.nn.Module, got {type(model).__name__}"
            raise NasvizError(msg)
        if dummy_input is None:
            msg = "dummy_input is required: an example batch, e.g. images[:2]"
            raise NasvizError(msg)
        self.model, self.dummy_input = model, dummy_input
        self.score_func, self.data_loader = score_func, data_loader
        self.constraints = dict(constraints or {"flops": "60%"})
        self.search_config = dict(search_config or {})
        self.inputs = inputs if inputs is not None else dummy_input
        self.path, self.factory = path, factory
        self.search_state: dict[str, Any] | None = (
            None if search_state is None else dict(search_state)
        )
        max_iter = self.search_config.get("max_iter_data_loader")
        self.forward_loop = calibration_loop(data_loader, max_iter)
        self.full_model: nn.Module | None = full_model
        self.explorer: SubnetExplorer | None = None
        self.activations: ActivationViewer | None = None
        self.export_panel: ExportPanel | None = None
        if self.search_state is not None:  # a finished search: replay it
            self.heatmap = SensitivityHeatmap.from_state(self.search_state)
            self.bisection = BisectionAnimation.from_state(self.search_state)
        else:
            self.heatmap, self.bisection = SensitivityHeatmap(), BisectionAnimation()

        converted = has_search_space(model)
        if converted and config is None:
            config = self._converted_config()
        self.editor = RuleConfigEditor(
            None if converted else model, config, dummy_input=dummy_input
        )
        self.convert_button = widgets.Button(
            description="Convert", icon="cogs", button_style="primary", disabled=converted
        )
        self.convert_button.on_click(lambda _b: self._guard(self.convert))
        self.config_status = widgets.HTML("")
        self.constraint_label = widgets.HTML(
            "constraints: "
            + html.escape(", ".join(f"{k} ≤ {v}" for k, v in self.constraints.items()))
        )
        self.run_button = widgets.Button(
            description="Run search", icon="play", button_style="success",
            disabled=score_func is None or not converted,
            tooltip="nv.prune with the score function" if score_func else "pass score_func",
        )  # fmt: skip
        self.run_button.on_click(lambda _b: self._guard(self.run_search))
        self.progress = ProgressBar("search")
        self.search_status = widgets.HTML("")
        self.search_views = widgets.VBox([self.heatmap.widget, self.bisection.widget])
        self.explore_box = widgets.VBox([_placeholder("convert the model first (Config tab)")])
        self.activations_box = widgets.VBox([_placeholder("convert the model first")])
        self.export_box = widgets.VBox([_placeholder("convert the model first")])
        self.tabs = widgets.Tab(
            children=[
                widgets.VBox(
                    [self.editor.widget, widgets.HBox([self.convert_button, self.config_status])]
                ),
                widgets.VBox(
                    [
                        widgets.HBox([self.constraint_label, self.run_button]),
                        self.progress.widget,
                        self.search_status,
                        self.search_views,
                    ]
                ),
                self.explore_box,
                self.activations_box,
                self.export_box,
            ]
        )
        self.tabs.titles = TABS
        self.widget = self.tabs
        if converted:
            self.config_status.value = "the model is converted: these are its rules"
            self._build_model_views()
        else:
            self.config_status.value = "edit the rules, then convert the model with them"

    # -- results ---------------------------------------------------------------------------------
    @property
    def config(self) -> nv.ModeloptBaseRuleConfig:
        """The rule config (the editor's value)."""
        return self.editor.value

    @property
    def exported(self) -> nn.Module | None:
        """The last exported model (from the Export tab), if any."""
        return None if self.export_panel is None else self.export_panel.exported

    # -- actions ---------------------------------------------------------------------------------
    def _converted_config(self) -> Any:
        modes = nv.modelopt_state(self.model)["modes"]
        return next((entry["config"] for name, entry in modes if name == "fastnas"), None)

    def convert(self) -> nn.Module:
        """Convert the model in place with the editor's config; builds the model's views."""
        if has_search_space(self.model):
            msg = "the model is converted already; build a Dashboard on a fresh model"
            raise NasvizError(msg)
        nv.convert(self.model, mode=[("fastnas", self.config)], dummy_input=self.dummy_input)
        # the full model for the activations: converted (channels in the sorted order the
        # subnets use) and copied before any search re-calibrates BatchNorm for a subnet
        self.full_model = copy.deepcopy(self.model)
        self.convert_button.disabled = True
        self.run_button.disabled = self.score_func is None
        space = nv.search_space(self.model)
        self.config_status.value = html.escape(f"converted: {space!r}")
        self._build_model_views()
        return self.model

    def _build_model_views(self) -> None:
        if self.full_model is None:
            self.full_model = copy.deepcopy(self.model)
            nv.sample(self.full_model, "max")
        self._build_explorer()
        self.activations = ActivationViewer(self.full_model, self.model, self.inputs)
        self.activations_box.children = [self.activations.widget]
        self.export_panel = ExportPanel(
            self.model, self.dummy_input, self.path, factory=self.factory
        )
        self.export_box.children = [self.export_panel.widget]

    def _build_explorer(self) -> None:
        kwargs: dict[str, Any] = {
            "constraints": self.constraints,
            "score_func": self.score_func,
            "forward_loop": self.forward_loop,
        }
        if self.search_state is not None:
            self.explorer = SubnetExplorer.from_search_state(
                self.model, self.dummy_input, self.search_state, **kwargs
            )
        else:
            self.explorer = SubnetExplorer(self.model, self.dummy_input, **kwargs)
        self.explore_box.children = [self.explorer.widget]

    def run_search(self) -> dict[str, Any]:
        """``nv.prune`` with the views as callbacks; leaves the best subnet selected and
        refreshes the explorer and the activations. Returns the search state.
        """
        if not has_search_space(self.model):
            msg = "convert the model first (Config tab, or dashboard.convert())"
            raise NasvizError(msg)
        if self.score_func is None:
            msg = "run_search needs a score_func: Dashboard(..., score_func=f)"
            raise NasvizError(msg)
        self.heatmap, self.bisection = SensitivityHeatmap(), BisectionAnimation()
        self.search_views.children = [self.heatmap.widget, self.bisection.widget]
        config = {
            "data_loader": self.data_loader,
            "score_func": self.score_func,
            **self.search_config,
        }
        config["callbacks"] = [*config.get("callbacks", []), self.heatmap, self.bisection,
                               self._on_event]  # fmt: skip
        self.run_button.disabled = True
        self.progress.start(1, "starting")
        try:
            _, state = nv.prune(
                self.model, constraints=self.constraints, dummy_input=self.dummy_input,
                config=config,
            )  # fmt: skip
        except Exception as e:
            self.progress.fail(html.escape(f"{type(e).__name__}: {e}"))
            raise
        finally:
            self.run_button.disabled = False
        self.search_state = state
        best = state["best"]
        self.search_status.value = html.escape(
            f"best subnet: score {fmt_score(best['score'])} (original "
            f"{fmt_score(state['original_score'])}), {best['config']}"
        )
        self._build_explorer()
        if self.activations is not None:
            self.activations.refresh()
        return state

    def _on_event(self, event: SearchEvent) -> None:
        if isinstance(event, MapStarted):
            self.progress.start(event.total, "sensitivity map", done=event.done)
        elif isinstance(event, MapEntry):
            self.progress.advance(1, html.escape(f"{event.hparam}={event.choice}"))
        elif isinstance(event, BisectionStep):
            self.progress.label.value = f"bisection step {event.step}: mid {event.mid:.4f}"
        elif isinstance(event, CandidateScored):
            self.progress.label.value = f"candidate {event.rank}: score {fmt_score(event.score)}"
        elif isinstance(event, SearchFinished):
            self.progress.finish(f"done in {event.seconds:.1f} s")

    def _guard(self, action: Callable[[], Any]) -> None:
        """Run a button's action; show an error in the tab's status instead of raising."""
        try:
            action()
        except Exception as e:
            text = html.escape(f"{type(e).__name__}: {e}")
            status = self.search_status if action == self.run_search else self.config_status
            status.value = f"<span style='color:{COLORS['infeasible']}'>{text}</span>"
