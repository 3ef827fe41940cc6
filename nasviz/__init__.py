"""nasviz: see and steer structured pruning of PyTorch models.

The engine (this package minus :mod:`nasviz.widgets`) is plain PyTorch; the verbs follow NVIDIA
Model Optimizer's FastNAS (``mtn.convert``, ``mtp.prune``, ``mto.save``)::

    import nasviz as nv

    model = nv.convert(model, mode="fastnas", dummy_input=x)
    model, search_state = nv.prune(model, mode="fastnas", constraints={"flops": "60%"},
                                   dummy_input=x, config={"data_loader": dl, "score_func": f})
    small = nv.export(model)
"""

from nasviz.config import FastNASConfig, ModeloptBaseConfig, ModeloptBaseRuleConfig
from nasviz.errors import ApplyModeError, NasvizError
from nasviz.hparam import Hparam

__version__ = "0.1.0"

__all__ = [
    "ApplyModeError",
    "FastNASConfig",
    "Hparam",
    "ModeloptBaseConfig",
    "ModeloptBaseRuleConfig",
    "NasvizError",
    "__version__",
]
