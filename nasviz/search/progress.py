"""``verbose=True``: tqdm progress bars driven by search events (the engine itself never prints)."""

from __future__ import annotations

from typing import Any

from nasviz.search.events import (
    BisectionStep,
    FinalScore,
    MapEntry,
    MapStarted,
    SearchEvent,
    SearchFinished,
)

__all__ = ["TqdmProgress"]


class TqdmProgress:
    """A search-event callback that shows the map and the bisection as tqdm bars."""

    def __init__(self, **tqdm_kwargs: Any) -> None:
        self._kwargs = tqdm_kwargs
        self._bar: Any = None

    def __call__(self, event: SearchEvent) -> None:
        """Advance the bar of one event: the map, the bisection or the final score (the end of
        the search closes it; other events are ignored).
        """
        from tqdm.auto import tqdm

        if isinstance(event, MapStarted):
            self.close()
            self._bar = tqdm(total=event.total, desc="sensitivity map", **self._kwargs)
            self._bar.update(0)
        elif isinstance(event, MapEntry) and self._bar is not None:
            self._bar.set_postfix_str(f"{event.hparam}={event.choice} drop={event.drop:+.4f}")
            self._bar.update(1)
        elif isinstance(event, BisectionStep):
            if self._bar is None or self._bar.desc != "binary search":
                self.close()
                self._bar = tqdm(desc="binary search", **self._kwargs)
            self._bar.set_postfix_str(
                f"mid={event.mid:.4f} flops={event.flops:.3g} "
                f"{'ok' if event.feasible else 'too big'}"
            )
            self._bar.update(1)
        elif isinstance(event, FinalScore):
            self.close()
            self._bar = tqdm(total=1, desc=f"final score {event.score:.4f}", **self._kwargs)
            self._bar.update(1)
        elif isinstance(event, SearchFinished):
            self.close()

    def close(self) -> None:
        """Close the open bar, if any."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
