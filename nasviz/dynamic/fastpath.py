"""Fused fast paths of torch modules that read their children's weights whole.

In eval mode without grad ``nn.TransformerEncoderLayer.forward`` may skip its children and run
one fused kernel on ``self.linear1.weight``, ``self.norm1.weight`` ... - the *full* tensors of
children nasviz has made dynamic, so a pruned FFN or stream would silently compute the unpruned
layer. (``DynamicMultiheadAttention`` blocks the path itself while sliced; a dynamic ``Linear``
or ``LayerNorm`` cannot.) :func:`block_fastpaths` switches the fast path off on every such
module holding dynamic layers, through the flag the layer's own check reads
(``activation_relu_or_gelu``; the regular path computes the same function with the active
children); :func:`restore_fastpaths` puts the flag back (on export). A failed convert rolls the
flag back with the rest of the model (it is a plain instance attribute).

Example::

    >>> block_fastpaths(model)        # after converting layers of an nn.TransformerEncoderLayer
    >>> restore_fastpaths(model)      # when exporting: plain layers again
"""

from __future__ import annotations

from torch import nn

from nasviz.dynamic.base import DynamicModule

__all__ = ["block_fastpaths", "restore_fastpaths"]

_KEY = "_nv_fastpath"


def block_fastpaths(model: nn.Module) -> None:
    """Switch off the fused fast path of every ``nn.TransformerEncoderLayer`` in ``model`` that
    holds dynamic layers (see the module docstring).
    """
    for m in model.modules():
        if not isinstance(m, nn.TransformerEncoderLayer) or _KEY in m.__dict__:
            continue
        if any(isinstance(c, DynamicModule) for c in m.modules()):
            m.__dict__[_KEY] = m.activation_relu_or_gelu
            m.activation_relu_or_gelu = 0


def restore_fastpaths(model: nn.Module) -> None:
    """Put back the fast-path flags :func:`block_fastpaths` switched off."""
    for m in model.modules():
        if _KEY in m.__dict__:
            m.activation_relu_or_gelu = m.__dict__.pop(_KEY)
