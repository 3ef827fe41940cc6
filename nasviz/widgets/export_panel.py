"""ExportPanel: freeze the chosen subnet into a plain model, save it, and prove it reloads.

*Export* turns the converted model's selected subnet into ordinary torch layers with fewer
channels (:func:`nasviz.export`; the converted model stays searchable). The panel then

1. saves the exported model to the path in its text box (:func:`nasviz.save` writes atomically:
   a temporary file renamed over the target, so a failed save never leaves half a file);
2. shows the file size and, with a ``dummy_input``, the FLOPs/params of the exported model next to
   the full model's (:func:`nasviz.profile`; the full size from
   :meth:`nasviz.CostModel.from_model`, which profiles the converted model at full width);
3. runs the **reload check**: :func:`nasviz.restore` onto a fresh instance of the original class
   (``factory()``, default ``type(model)()``), then compares the outputs of the restored and the
   exported model on ``dummy_input`` (without one: every weight and buffer) and reports
   ``ok`` / ``mismatch`` with the max abs difference, or ``error`` with the reason.

With a ``dummy_input`` the panel also offers the checked deployment exports next to the plain
module (the **ONNX** and **torch.export** boxes): :func:`nasviz.export_onnx` and
:func:`nasviz.export_program` write ``<path>.onnx`` / ``<path>.pt2`` only after the file
reproduces the module's outputs (onnxruntime / a reloaded program); the table shows each file's
size and max abs difference, or why it was refused (e.g. onnx not installed).

Results are engine objects: :attr:`ExportPanel.exported` (the plain ``nn.Module``),
:attr:`ExportPanel.path`, :attr:`ExportPanel.check` (a :class:`ReloadCheck`) and
:attr:`ExportPanel.figures` (sizes and costs as a dict), :attr:`ExportPanel.reports`
(``{format: ExportReport}``) and :attr:`ExportPanel.report_errors` (``{format: message}``).

Example::

    panel = ExportPanel(model, dummy_input=x, default_path="digits_pruned.pt",
                        factory=lambda: DigitsCNN(width=32))
    panel                      # in a notebook: press "Export & save"
    small = panel.export()     # the same from plain Python; panel.check.ok is True
"""

from __future__ import annotations

import html
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import ipywidgets as widgets
import torch
from torch import nn

import nasviz as nv
from nasviz.errors import NasvizError
from nasviz.export import ExportReport
from nasviz.widgets._base import COLORS, UI_LOCK, View, fmt_flops, fmt_params, fmt_pct

__all__ = ["FORMATS", "ExportPanel", "ReloadCheck", "max_abs_diff"]

#: the checked deployment exports the panel offers: ``{name: (file suffix, engine function)}``
FORMATS: dict[str, tuple[str, Callable[..., ExportReport]]] = {
    "ONNX": (".onnx", nv.export_onnx),
    "torch.export": (".pt2", nv.export_program),
}


@dataclass(frozen=True)
class ReloadCheck:
    """The result of restoring a saved file and comparing it with the exported model.

    ``status`` is ``"ok"`` (difference within ``tolerance``), ``"mismatch"`` or ``"error"`` (the
    restore itself failed; ``message`` says why). ``compared`` names what was compared.
    """

    status: Literal["ok", "mismatch", "error"]
    max_abs_diff: float | None
    compared: str
    message: str

    @property
    def ok(self) -> bool:
        """Whether the restored model matched the exported one within tolerance (``"ok"``)."""
        return self.status == "ok"


def _call(model: nn.Module, dummy_input: Any) -> Any:
    if isinstance(dummy_input, tuple):
        return model(*dummy_input)
    if isinstance(dummy_input, Mapping):
        return model(**dummy_input)
    return model(dummy_input)


def _tensors(obj: Any) -> list[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, Mapping):
        return [t for k in sorted(obj, key=str) for t in _tensors(obj[k])]
    if isinstance(obj, tuple | list):
        return [t for o in obj for t in _tensors(o)]
    return []


def max_abs_diff(a: Any, b: Any) -> float:
    """Max abs difference over all tensors of two outputs (tensors, tuples, lists, dicts).

    Outputs of different structure or shapes give ``inf``.
    """
    ta, tb = _tensors(a), _tensors(b)
    if len(ta) != len(tb) or any(x.shape != y.shape for x, y in zip(ta, tb)):
        return float("inf")
    diffs = [(x.double() - y.double()).abs().max().item() for x, y in zip(ta, tb) if x.numel()]
    return float(max(diffs, default=0.0))


class ExportPanel(View):
    """Export the selected subnet, save it atomically, show its cost, check that it reloads.

    Args:
        model: a converted model (``nv.convert`` / ``nv.prune``) with the subnet to export
            selected; it stays searchable.
        dummy_input: an example batch (tensor, tuple of args or dict of kwargs) for the FLOPs
            and the output comparison; without it the check compares weights only.
        default_path: the initial value of the path box.
        factory: builds a fresh instance of the original model class for the reload check
            (default ``type(model)()``; pass one when the constructor needs arguments).
        tolerance: the largest max abs difference the check accepts.
        formats: the deployment exports checked at first (``"ONNX"``, ``"torch.export"``);
            they need a ``dummy_input``.

    Example::

        >>> panel = ExportPanel(model, x, "pruned.pt")
        >>> small = panel.export()
        >>> panel.path.exists(), panel.check.status
        (True, 'ok')
    """

    def __init__(
        self,
        model: nn.Module,
        dummy_input: Any = None,
        default_path: str | os.PathLike[str] = "pruned.pt",
        *,
        factory: Callable[[], nn.Module] | None = None,
        tolerance: float = 1e-5,
        formats: Sequence[str] = (),
    ) -> None:
        nv.search_space(model)  # refuses a model that is not converted, with the fix
        unknown = [f for f in formats if f not in FORMATS]
        if unknown:
            msg = f"formats: {unknown} unknown; use any of {list(FORMATS)}"
            raise NasvizError(msg)
        if formats and dummy_input is None:
            msg = f"formats={list(formats)} need a dummy_input to export and check the files"
            raise NasvizError(msg)
        if factory is not None and not callable(factory):
            msg = (
                f"factory must be a callable returning a fresh model, got {factory!r}; e.g. "
                f"factory=lambda: {type(model).__name__}(...)"
            )
            raise NasvizError(msg)
        self.model, self.dummy_input, self.factory = model, dummy_input, factory
        self.tolerance = tolerance
        self.exported: nn.Module | None = None
        self.path: Path | None = None
        self.check: ReloadCheck | None = None
        self.figures: dict[str, Any] = {}
        self.error: str | None = None
        self.reports: dict[str, ExportReport] = {}
        self.report_errors: dict[str, str] = {}
        self._full: nv.Profile | None = None
        self.format_boxes = {
            name: widgets.Checkbox(
                value=name in formats, description=name, indent=False,
                disabled=dummy_input is None, layout=widgets.Layout(width="auto"),
            )
            for name in FORMATS
        }  # fmt: skip

        self.path_text = widgets.Text(value=os.fspath(default_path), description="path")
        self.export_button = widgets.Button(
            description="Export & save", button_style="primary", icon="download"
        )
        self.export_button.on_click(self._on_click)
        self.status = widgets.HTML("<i>select a subnet, then press Export &amp; save</i>")
        self.table = widgets.HTML("")
        self.widget = widgets.VBox(
            [
                widgets.HBox([self.path_text, *self.format_boxes.values(), self.export_button]),
                self.status,
                self.table,
            ]
        )

    # -- engine ----------------------------------------------------------------------------------
    def _full_profile(self) -> nv.Profile:
        if self._full is None:
            self._full = nv.CostModel.from_model(self.model, self.dummy_input).full
        return self._full

    def _fresh(self) -> nn.Module:
        cls = type(self.model)
        try:
            fresh = self.factory() if self.factory is not None else cls()
        except Exception as e:
            how = "factory()" if self.factory is not None else f"{cls.__name__}()"
            msg = (
                f"could not build a fresh model with {how} ({type(e).__name__}: {e}); pass "
                f"factory=lambda: {cls.__name__}(...) with the original constructor arguments"
            )
            raise NasvizError(msg) from e
        if not isinstance(fresh, nn.Module):
            msg = f"factory() returned {type(fresh).__name__}, not an nn.Module"
            raise NasvizError(msg)
        return fresh

    def reload_check(self, exported: nn.Module, path: Path) -> ReloadCheck:
        """Restore ``path`` onto a fresh model and compare it with ``exported``."""
        try:
            restored = nv.restore(self._fresh(), path)
        except NasvizError as e:
            hint = ""
            if self.factory is None:
                hint = (
                    f"; the fresh {type(self.model).__name__}() must be built like the saved "
                    f"model: pass factory=lambda: {type(self.model).__name__}(...)"
                )
            return ReloadCheck("error", None, "nothing", f"{e}{hint}")
        with torch.no_grad():
            exported.eval()
            restored.eval()
            if self.dummy_input is not None:
                compared = "outputs on dummy_input"
                diff = max_abs_diff(
                    _call(exported, self.dummy_input), _call(restored, self.dummy_input)
                )
            else:
                compared = "weights and buffers (no dummy_input)"
                sd_a, sd_b = exported.state_dict(), restored.state_dict()
                diff = max_abs_diff(sd_a, sd_b) if sd_a.keys() == sd_b.keys() else float("inf")
        ok = diff <= self.tolerance
        message = f"max |diff| = {diff:.3g} ({'<=' if ok else '>'} {self.tolerance:g})"
        return ReloadCheck("ok" if ok else "mismatch", diff, compared, message)

    def deploy(self, exported: nn.Module, path: Path, formats: Sequence[str]) -> None:
        """The checked ONNX / torch.export files next to ``path`` (engine calls; a refusal is
        recorded in :attr:`report_errors`, not raised).
        """
        self.reports, self.report_errors = {}, {}
        for name in formats:
            suffix, export_fn = FORMATS[name]
            try:
                self.reports[name] = export_fn(exported, self.dummy_input, path.with_suffix(suffix))
            except NasvizError as e:
                self.report_errors[name] = str(e)

    def export(
        self, path: str | os.PathLike[str] | None = None, formats: Sequence[str] | None = None
    ) -> nn.Module:
        """Export, save to ``path`` (default: the path box), run the reload check, write the
        checked ``formats`` (default: the ticked boxes); returns the exported model (also in
        :attr:`exported`).
        """
        target = Path(path if path is not None else self.path_text.value).expanduser()
        if not target.name or target.is_dir():
            msg = f"path {str(target)!r} is not a file name; e.g. 'pruned.pt'"
            raise NasvizError(msg)
        if not target.parent.is_dir():
            msg = (
                f"path {str(target)!r}: the directory {str(target.parent)!r} does not exist; "
                "create it first or pick another path"
            )
            raise NasvizError(msg)
        exported = nv.export(self.model)
        exported.eval()
        nv.save(exported, target)
        figures: dict[str, Any] = {"path": str(target), "bytes": target.stat().st_size}
        figures["subnet"] = nv.get_subnet_config(self.model)
        if self.dummy_input is not None:
            small, full = nv.profile(exported, self.dummy_input), self._full_profile()
            figures.update(flops_full=full.flops, flops_exported=small.flops)
            figures.update(params_full=full.params, params_exported=small.params)
        self.exported, self.path, self.figures = exported, target, figures
        self.check = self.reload_check(exported, target)
        chosen = [n for n, box in self.format_boxes.items() if box.value]
        wanted = list(formats) if formats is not None else chosen
        if wanted and self.dummy_input is None:
            msg = f"formats={wanted} need a dummy_input; construct the panel with one"
            raise NasvizError(msg)
        self.deploy(exported, target, wanted)
        self.error = None
        self._render()
        return exported

    # -- view ------------------------------------------------------------------------------------
    def _on_click(self, _button: Any) -> None:
        self.export_button.disabled = True
        self.status.value = "<i>exporting...</i>"
        try:
            self.export()
        except Exception as e:  # shown in the panel; export() itself raises
            self.error = f"{type(e).__name__}: {e}"
            self.status.value = (
                f"<span style='color:{COLORS['infeasible']}'>export failed: "
                f"{html.escape(self.error)}</span>"
            )
        finally:
            self.export_button.disabled = False

    def _render(self) -> None:
        f, check = self.figures, self.check
        rows = [("file", f"<code>{html.escape(f['path'])}</code> ({f['bytes'] / 1024:.1f} KiB)")]
        if "flops_full" in f:
            for key, fmt in (("flops", fmt_flops), ("params", fmt_params)):
                full, small = f[f"{key}_full"], f[f"{key}_exported"]
                rows.append((key, f"{fmt(small)} of {fmt(full)} (<b>{fmt_pct(small, full)}</b>)"))
        rows.append(("subnet", html.escape(", ".join(f"{k}={v}" for k, v in f["subnet"].items()))))
        if check is not None:
            color = COLORS["feasible"] if check.ok else COLORS["infeasible"]
            label = {"ok": "OK", "mismatch": "MISMATCH", "error": "ERROR"}[check.status]
            rows.append(
                (
                    "reload check",
                    f"<b style='color:{color}'>{label}</b> · {html.escape(check.compared)} · "
                    f"{html.escape(check.message)}",
                )
            )
        for name, rep in self.reports.items():
            rows.append(
                (
                    name,
                    f"<code>{html.escape(str(rep.path))}</code> ({rep.bytes / 1024:.1f} KiB) · "
                    f"<b style='color:{COLORS['feasible']}'>OK</b> · max |diff| = "
                    f"{rep.max_abs_diff:.3g} (&lt;= {rep.limit:.3g})",
                )
            )
        for name, msg in self.report_errors.items():
            rows.append(
                (name, f"<b style='color:{COLORS['infeasible']}'>REFUSED</b> · {html.escape(msg)}")
            )
        body = "".join(
            f"<tr><td style='padding-right:1em'><b>{k}</b></td><td>{v}</td></tr>" for k, v in rows
        )
        with UI_LOCK:
            self.table.value = f"<table>{body}</table>"
            self.status.value = (
                f"exported {type(self.exported).__name__} and saved to "
                f"<code>{html.escape(f['path'])}</code>"
            )
