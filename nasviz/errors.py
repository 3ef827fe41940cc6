"""The exceptions nasviz raises: one base class, a few specific subclasses.

Every error names the offending field or value and says how to fix it. ``NasvizError``
derives from ``ValueError`` so code that already catches bad-input errors keeps working.
"""

from __future__ import annotations

__all__ = [
    "ApplyModeError",
    "ConstraintError",
    "CorruptFileError",
    "ExportError",
    "ExtensionNameError",
    "HparamError",
    "MetricError",
    "MissingDummyInputWarning",
    "ModuleIdError",
    "NasvizError",
    "NasvizWarning",
    "NoSearchAlgorithmError",
    "RestoreError",
    "SearchError",
    "TracingError",
    "UntraceableError",
]


class NasvizError(ValueError):
    """Base class of every error nasviz raises on purpose.

    Example (every subclass is a ``ValueError`` too; ``model`` from
    :func:`nasviz.testing.searchable_mlp`)::

        >>> try:
        ...     nv.select(model, {"fc1.out_features": 5})
        ... except ValueError as e:
        ...     print(type(e).__name__, isinstance(e, NasvizError))
        HparamError True
    """


class ApplyModeError(NasvizError):
    """A mode could not be applied (wrong order, failed conversion, unknown mode).

    Example::

        >>> nv.convert(TinyMLP(), mode="fastnass")
        Traceback (most recent call last):
        ...
        nasviz.errors.ApplyModeError: unknown mode 'fastnass'. Did you mean 'fastnas'? ...
    """


class RestoreError(NasvizError):
    """A saved state does not fit the model it is restored onto (the model is left untouched).

    Example::

        >>> torch.save({"weights": 1}, "other.pt")
        >>> nv.restore(TinyMLP(), "other.pt")
        Traceback (most recent call last):
        ...
        nasviz.errors.RestoreError: 'other.pt' is not a nasviz checkpoint: expected keys ...
    """


class HparamError(NasvizError):
    """An hparam was given a value outside its choices, or two hparams cannot be merged.

    Example (``model`` from :func:`nasviz.testing.searchable_mlp`)::

        >>> nv.select(model, {"fc1.out_features": 5})
        Traceback (most recent call last):
        ...
        nasviz.errors.HparamError: fc1.out_features: 5 is not a valid choice; choose one of ...
    """


class TracingError(NasvizError):
    """The model graph could not be analysed at all.

    Example (:class:`~nasviz.testing.TinyMLP` takes 8 features)::

        >>> nv.convert(TinyMLP(), mode="fastnas", dummy_input=torch.randn(2, 3))
        Traceback (most recent call last):
        ...
        nasviz.errors.TracingError: TinyMLP does not run on the given dummy_input (RuntimeError: ...
    """


class ConstraintError(NasvizError):
    """A constraint is malformed or cannot be met by any subnet.

    Example (``model, x`` from :func:`nasviz.testing.searchable_mlp`)::

        >>> nv.BinarySearcher().search(model, {"flop": "70%"}, x, {"score_func": known_score})
        Traceback (most recent call last):
        ...
        nasviz.errors.ConstraintError: unknown constraint 'flop' = '70%': nasviz can bound ...
    """


class SearchError(NasvizError):
    """The search could not run (bad config, a failing score function, a bad checkpoint).

    Example (``model, x`` from :func:`nasviz.testing.searchable_mlp`)::

        >>> nv.BinarySearcher().search(model, {"params": "70%"}, x, {"scorefunc": known_score})
        Traceback (most recent call last):
        ...
        nasviz.errors.SearchError: unknown search config key(s) ['scorefunc']; ...
    """


class UntraceableError(TracingError):
    """The model cannot be evaluated as one fx graph (the message says why); the evaluator then
    scores every entry without its sub-graph cache.
    """


class NoSearchAlgorithmError(NasvizError, NotImplementedError):
    """A mode was asked for its search algorithm but has none (catch as either base class)."""


class _LookupNasvizError(NasvizError, KeyError):
    """A name lookup failed; catchable as ``NasvizError``, ``ValueError`` and ``KeyError``."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class ModuleIdError(_LookupNasvizError):
    """A module id is not a qualified name of the model (the message lists the closest ones)."""


class ExtensionNameError(_LookupNasvizError):
    """An extension name is not registered (the message lists the closest ones)."""


class CorruptFileError(NasvizError):
    """A file nasviz wrote does not match its content hash (changed or damaged since)."""


class ExportError(NasvizError):
    """An export could not be written, or its file does not reproduce the model's outputs.

    Example::

        >>> nv.export_onnx(TinyMLP(), torch.randn(2, 8), "mlp.onnx", exporter="tensorrt")
        Traceback (most recent call last):
        ...
        nasviz.errors.ExportError: exporter='tensorrt': use 'auto', 'dynamo' or 'torchscript'
    """


class NasvizWarning(UserWarning):
    """Base class of every warning nasviz emits."""


class MissingDummyInputWarning(NasvizWarning):
    """``convert`` without a dummy_input left dimensions static that one would have opened."""


class MetricError(SearchError):
    """``config['metric']`` raised: the message names it, the cause is the metric's error."""
