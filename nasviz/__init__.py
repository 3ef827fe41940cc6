"""nasviz: see and steer structured pruning of PyTorch models.

The engine (this package minus :mod:`nasviz.widgets`) is plain PyTorch; the verbs follow NVIDIA
Model Optimizer's FastNAS (``mtn.convert``, ``mtp.prune``, ``mto.save``)::

    import nasviz as nv

    model = nv.convert(model, mode="fastnas", dummy_input=x)
    model, search_state = nv.prune(model, mode="fastnas", constraints={"flops": "60%"},
                                   dummy_input=x, config={"data_loader": dl, "score_func": f})
    small = nv.export(model)
"""

from nasviz.config import ModeloptBaseConfig, ModeloptBaseRuleConfig
from nasviz.errors import (
    ApplyModeError,
    ConstraintError,
    ExportError,
    HparamError,
    NasvizError,
    RestoreError,
    SearchError,
    TracingError,
)
from nasviz.export import ExportReport, export_onnx, export_program, save_pretrained
from nasviz.extension import (
    ActivationMapGrabber,
    HooksHandle,
    ModelExtender,
    ModelStump,
    compare_activations,
)
from nasviz.fastnas import (
    BinarySearcher,
    FastNASConfig,
    FastNASModeDescriptor,
    FastNASPatchManager,
    config_as_code,
    load_sensitivity_map,
    pareto_front,
    predict_drop,
    prune,
    save_sensitivity_map,
    search_with_pins,
)
from nasviz.hparam import Hparam
from nasviz.modes import ModeDescriptor, get_mode, register_mode
from nasviz.modes import export as _export_mode  # noqa: F401 - registers the "export" mode
from nasviz.patch import AutoNASPatchManager, PatchManager, prep_for_eval
from nasviz.profile import CostModel, Profile, profile
from nasviz.recover import DistillResult, KDLoss, distill, iterative_prune
from nasviz.search import Constraints, SearchHistory
from nasviz.space import (
    SearchSpace,
    convert,
    export,
    get_subnet_config,
    sample,
    search_space,
    select,
)
from nasviz.state import apply_mode, modelopt_state, restore, restore_from_modelopt_state, save

__version__ = "0.1.0"

__all__ = [
    "ActivationMapGrabber",
    "ApplyModeError",
    "AutoNASPatchManager",
    "BinarySearcher",
    "ConstraintError",
    "Constraints",
    "CostModel",
    "DistillResult",
    "ExportError",
    "ExportReport",
    "FastNASConfig",
    "FastNASModeDescriptor",
    "FastNASPatchManager",
    "HooksHandle",
    "Hparam",
    "HparamError",
    "KDLoss",
    "ModeDescriptor",
    "ModelExtender",
    "ModelStump",
    "ModeloptBaseConfig",
    "ModeloptBaseRuleConfig",
    "NasvizError",
    "PatchManager",
    "Profile",
    "RestoreError",
    "SearchError",
    "SearchHistory",
    "SearchSpace",
    "TracingError",
    "__version__",
    "apply_mode",
    "compare_activations",
    "config_as_code",
    "convert",
    "distill",
    "export",
    "export_onnx",
    "export_program",
    "get_mode",
    "get_subnet_config",
    "iterative_prune",
    "load_sensitivity_map",
    "modelopt_state",
    "pareto_front",
    "predict_drop",
    "prep_for_eval",
    "profile",
    "prune",
    "register_mode",
    "restore",
    "restore_from_modelopt_state",
    "sample",
    "save",
    "save_pretrained",
    "save_sensitivity_map",
    "search_space",
    "search_with_pins",
    "select",
]
