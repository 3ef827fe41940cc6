"""The notebook layer: ipywidgets + plotly views over the nasviz engine.

Every view takes engine objects, holds no pruning logic, and exposes its result as an engine
object. Install with ``pip install nasviz[notebook]``; the engine never imports this package.

* :class:`SensitivityHeatmap` - the sensitivity map, live while it is computed, or from a checkpoint
* :class:`BisectionAnimation` - the binary search step by step, against the constraint
* :class:`RuleConfigEditor` - glob rules per layer type; its ``value`` is a ``FastNASConfig``
* :class:`SubnetExplorer` - a slider per channel group, live FLOPs/params, evaluate, export
* :class:`LatencyScatter` - measured latency against FLOPs over sampled subnets, rank disagreement
* :class:`ActivationViewer` - feature maps of the full model and the subnet, per-layer drift
* :class:`ExportPanel` - export, atomic save, size and cost, reload check; ONNX and torch.export
* :class:`RecoveryMonitor` - a distillation run live: loss, score, Stop/Resume
* :class:`Dashboard` - all of the above over one model and one search
"""

from nasviz.widgets.activations import ActivationViewer
from nasviz.widgets.bisection import BisectionAnimation
from nasviz.widgets.config_editor import RuleConfigEditor
from nasviz.widgets.dashboard import Dashboard
from nasviz.widgets.explorer import SubnetExplorer
from nasviz.widgets.export_panel import ExportPanel
from nasviz.widgets.heatmap import SensitivityHeatmap
from nasviz.widgets.latency import LatencyScatter
from nasviz.widgets.recovery import RecoveryMonitor

__all__ = [
    "ActivationViewer",
    "BisectionAnimation",
    "Dashboard",
    "ExportPanel",
    "LatencyScatter",
    "RecoveryMonitor",
    "RuleConfigEditor",
    "SensitivityHeatmap",
    "SubnetExplorer",
]
