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
    """Base class of every error nasviz raises on purpose."""


class ApplyModeError(NasvizError):
    """A mode could not be applied (wrong order, failed conversion, unknown mode)."""


class RestoreError(NasvizError):
    """A saved state does not fit the model it is restored onto (the model is left untouched)."""


class HparamError(NasvizError):
    """An hparam was given a value outside its choices, or two hparams cannot be merged."""


class TracingError(NasvizError):
    """The model graph could not be analysed at all."""


class ConstraintError(NasvizError):
    """A constraint is malformed or cannot be met by any subnet."""


class SearchError(NasvizError):
    """The search could not run (bad config, a failing score function, a bad checkpoint)."""


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
    """An export could not be written, or its file does not reproduce the model's outputs."""


class NasvizWarning(UserWarning):
    """Base class of every warning nasviz emits."""


class MissingDummyInputWarning(NasvizWarning):
    """``convert`` without a dummy_input left dimensions static that one would have opened."""


class MetricError(SearchError):
    """``config['metric']`` raised: the message names it, the cause is the metric's error."""
