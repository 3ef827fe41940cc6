"""Searching for the best subnet under constraints (searchers, constraints, search history)."""

from nasviz.search.constraints import CONSTRAINT_KEYS, Constraints, Limit

__all__ = ["CONSTRAINT_KEYS", "Constraints", "Limit"]
