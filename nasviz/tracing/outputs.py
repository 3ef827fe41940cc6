"""Which model outputs keep their width: the model's contract with its caller.

A channel that reaches a model output is normally static ("output layer"): whoever calls the
model expects that width. A Hugging Face ``ModelOutput`` that carries ``logits`` also returns
by-products (``encoder_last_hidden_state``, ``hidden_states``, ``past_key_values``,
``attentions`` ...) whose widths are the model's own hidden sizes: they follow the config, which
the export updates (``config.d_model`` ...), so pinning them would freeze a seq2seq model's
whole residual stream for nothing. The rule, :func:`pinned_outputs`:

* ``keep_outputs=None`` (the default): every output keeps its width, except the fields of a
  ``ModelOutput`` with a ``*logits`` field that are listed in :data:`BY_PRODUCTS`. ``logits``,
  ``loss`` and any field not listed (``pred_boxes``, ...) keep their width.
* ``keep_outputs=[patterns]`` (``FastNASConfig(keep_outputs=[...])``): exactly the outputs a
  pattern names keep their width; the rest follow the pruned widths. Outputs are named by their
  path, dotted (``"logits"``, ``"0"`` for the first item of a tuple, ``"past_key_values.0.1"``;
  a bare tensor is ``"output"``); a pattern is an ``fnmatch`` glob that names an output or any
  of its dotted prefixes (``"hidden_states"`` keeps every ``hidden_states.<i>``). A pattern that
  names no output is refused, with the output names.

Example::

    >>> pinned_outputs(OutputNames(["logits", "encoder_last_hidden_state"], True), None)
    {'logits'}
    >>> pinned_outputs(OutputNames(["0", "1"], False), ["0"])
    {'0'}
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch.utils._pytree as pytree

from nasviz.errors import TracingError

__all__ = ["BY_PRODUCTS", "OutputNames", "leaf_names", "pinned_outputs", "spec_names"]

#: fields of a transformers ``ModelOutput`` whose widths follow the model's config (hidden
#: sizes, head counts): free by default when the output also has logits
BY_PRODUCTS = frozenset(
    {
        "last_hidden_state",
        "encoder_last_hidden_state",
        "hidden_states",
        "encoder_hidden_states",
        "decoder_hidden_states",
        "past_key_values",
        "attentions",
        "encoder_attentions",
        "decoder_attentions",
        "cross_attentions",
    }
)


@dataclass(frozen=True)
class OutputNames:
    """The dotted names of a graph's output leaves, in order; whether the output is a
    transformers ``ModelOutput`` (recognised by its class hierarchy, transformers not imported).
    """

    names: list[str]
    model_output: bool


def _is_model_output(cls: Any) -> bool:
    return isinstance(cls, type) and any(c.__name__ == "ModelOutput" for c in cls.__mro__)


def _key(entry: Any) -> str:
    for attr in ("key", "idx", "name"):
        if hasattr(entry, attr):
            return str(getattr(entry, attr))
    return str(entry)


def leaf_names(structure: Any) -> tuple[OutputNames, list[Any]]:
    """Name every leaf of an output ``structure`` (fx's output argument); returns the names and
    the leaves in the same order.
    """
    flat, _ = pytree.tree_flatten_with_path(structure)
    names = [".".join(_key(k) for k in path) or "output" for path, _ in flat]
    return OutputNames(names, _is_model_output(type(structure))), [leaf for _, leaf in flat]


def spec_names(spec: pytree.TreeSpec) -> OutputNames:
    """The leaf names of a ``torch.export`` output spec (``program.call_spec.out_spec``)."""
    names: list[str] = []

    def walk(s: pytree.TreeSpec, prefix: str) -> None:
        if s.is_leaf():
            names.append(prefix or "output")
            return
        children = list(s.children())
        ctx = s.context
        keyed = isinstance(ctx, (list, tuple)) and len(ctx) == len(children)
        keys = [str(k) for k in ctx] if keyed else [str(i) for i in range(len(children))]
        for key, child in zip(keys, children, strict=True):
            walk(child, f"{prefix}.{key}" if prefix else key)

    walk(spec, "")
    return OutputNames(names, _is_model_output(spec.type))


def _matches(name: str, pattern: str) -> bool:
    parts = name.split(".")
    return any(fnmatch.fnmatchcase(".".join(parts[:k]), pattern) for k in range(1, len(parts) + 1))


def pinned_outputs(outputs: OutputNames, keep_outputs: Sequence[str] | None) -> set[str]:
    """The output names whose widths stay static (see the module docstring).

    Raises :class:`~nasviz.errors.TracingError` when a ``keep_outputs`` pattern names no output.
    """
    names = outputs.names
    if keep_outputs is not None:
        unmatched = [p for p in keep_outputs if not any(_matches(n, p) for n in names)]
        if unmatched:
            msg = (
                f"FastNASConfig keep_outputs={list(keep_outputs)!r}: {unmatched!r} names no "
                f"output of the model; its outputs are {names!r} (dotted paths, globs allowed). "
                "Fix: name outputs from that list, or leave keep_outputs=None for the default"
            )
            raise TracingError(msg)
        return {n for n in names if any(_matches(n, p) for p in keep_outputs)}
    top = {n.split(".")[0] for n in names}
    if not (outputs.model_output and any(t.endswith("logits") for t in top)):
        return set(names)
    return {n for n in names if n.split(".")[0] not in BY_PRODUCTS}
