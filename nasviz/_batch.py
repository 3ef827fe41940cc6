"""The user's batches as model calls: one convention for every engine loop that feeds a model.

A ``data_loader`` batch is read the way ``dummy_input`` is, except that a tuple is
``(inputs, targets, ...)`` (the torch ``DataLoader`` convention) rather than positional
arguments:

=====================================  ==============================  ====================
batch                                  model call                      target
=====================================  ==============================  ====================
a tensor ``x``                         ``model(x)``                    none
``(x, y, ...)`` / ``[x, y, ...]``      ``model(x)``                    ``y``
``({"input_ids": ...}, y)``            ``model(**batch[0])``           ``y``
a mapping (Hugging Face style)         ``model(**batch)``              ``batch["labels"]``
=====================================  ==============================  ====================

A mapping is passed whole, ``labels`` included, as a transformers ``Trainer`` does (the model
then also computes its loss). BatchNorm calibration (:func:`nasviz.patch.calibration_loop`), the
scorers (:mod:`nasviz.search.scoring`) and distillation (:mod:`nasviz.recover`) all call
:func:`model_input` and :func:`call_model`. Example::

    >>> call_model(model, model_input({"input_ids": ids, "attention_mask": mask}))  # model(**batch)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

__all__ = ["batch_size", "batch_target", "call_model", "model_input", "to_device"]


def model_input(batch: Any) -> Any:
    """The model input of a loader batch: a tuple/list's first item, anything else whole."""
    return batch[0] if isinstance(batch, (tuple, list)) else batch


def batch_target(batch: Any) -> Any:
    """The target of a loader batch: a tuple/list's second item, a mapping's ``"labels"``,
    else ``None``.
    """
    if isinstance(batch, (tuple, list)):
        return batch[1] if len(batch) > 1 else None
    if isinstance(batch, Mapping):
        return batch.get("labels")
    return None


def call_model(model: nn.Module | Any, x: Any) -> Any:
    """``model(**x)`` for a mapping input, else ``model(x)``."""
    return model(**x) if isinstance(x, Mapping) else model(x)


def to_device(value: Any, device: torch.device) -> Any:
    """``value`` with every tensor in it (nested in tuples, lists, mappings) moved to ``device``."""
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, Mapping):
        return {k: to_device(v, device) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return type(value)(to_device(v, device) for v in value)
    return value


def batch_size(value: Any) -> int:
    """The leading dimension of the first tensor in ``value`` (1 if there is none)."""
    if isinstance(value, torch.Tensor):
        return int(value.shape[0]) if value.dim() else 1
    if isinstance(value, (tuple, list, Mapping)):
        for v in value.values() if isinstance(value, Mapping) else value:
            if isinstance(v, (torch.Tensor, Mapping)):
                return batch_size(v)
    return 1
