"""The exceptions nasviz raises: one base class, a few specific subclasses.

Every error names the offending field or value and says how to fix it. ``NasvizError``
derives from ``ValueError`` so code that already catches bad-input errors keeps working.
"""

from __future__ import annotations

__all__ = [
    "ApplyModeError",
    "ConstraintError",
    "HparamError",
    "MissingDummyInputWarning",
    "NasvizError",
    "NasvizWarning",
    "RestoreError",
    "SearchError",
    "TracingError",
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


class NasvizWarning(UserWarning):
    """Base class of every warning nasviz emits."""


class MissingDummyInputWarning(NasvizWarning):
    """``convert`` without a dummy_input left dimensions static that one would have opened."""
