"""The sensitivity map as data: predicted drops, the monotone map, pins, and a JSON file.

FastNAS's map ``{hparam: {choice: drop}}`` holds the score drop of each *single-group* reduction
(every other group at full width). FastNAS prices a whole subnet under an **additivity
assumption**: its drop is the sum of its groups' single-group drops (the original width costs 0).
:func:`predict_drop` is that sum, for any subnet config.

The searcher's rule (:func:`config_at_drop`: every group at its smallest choice whose drop is at
most the tolerated drop) never takes a width ``c`` when a narrower width drops less: it behaves
exactly as if every drop were replaced by the smallest drop of any width up to ``c``.
:func:`monotone_map` is that map (a running minimum from the narrowest width up), under which
drop never increases as a group widens; ``config_at_drop`` gives the same subnet with either map,
and the cells where the two differ are widths the bisection skips.

**Pins** fix some groups at a width (``{"layer1.0.conv1.out_channels": 32}``):
:func:`check_pins` refuses an unknown group or a width that is not one of its choices, naming
both; :func:`config_at_drop` and the Pareto front keep pinned groups at their pins.

:func:`save_sensitivity_map` writes the map (with each group's choices and the original score)
as a small versioned JSON file, atomically; :func:`load_sensitivity_map` reads and validates it,
so the heatmap and the explorer need neither the model nor the search checkpoint. Example::

    >>> predict_drop(KNOWN_DROPS_WITHOUT_FULL, {FC1: 8, FC2: 12})
    0.07
    >>> save_sensitivity_map(state, "map.json"); load_sensitivity_map("map.json").sensitivity_map
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nasviz.errors import HparamError, SearchError
from nasviz.hparam import Hparam
from nasviz.search.events import SearchHistory, SearchStarted

__all__ = [
    "MAP_FILE_FORMAT",
    "MAP_FILE_VERSION",
    "SensitivityMapFile",
    "check_pins",
    "config_at_drop",
    "drop_levels",
    "load_sensitivity_map",
    "monotone_map",
    "predict_drop",
    "save_sensitivity_map",
]

SensitivityMap = Mapping[str, Mapping[Any, float]]
Choices = Mapping[str, Hparam] | Mapping[str, Sequence[int]]

MAP_FILE_FORMAT = "nasviz.sensitivity_map"
MAP_FILE_VERSION = 1


def _normalise(sensitivity_map: SensitivityMap) -> dict[str, dict[int, float]]:
    return {n: {int(c): float(d) for c, d in v.items()} for n, v in sensitivity_map.items()}


def choices_of(hparams: Choices) -> dict[str, list[int]]:
    """``{name: sorted choices}`` from hparams or from plain choice lists."""
    return {
        n: sorted(int(c) for c in (hp.choices if isinstance(hp, Hparam) else hp))
        for n, hp in hparams.items()
    }


def monotone_map(sensitivity_map: SensitivityMap) -> dict[str, dict[int, float]]:
    """The map the searcher's rule acts on: each drop replaced by the smallest drop of any
    width up to it (so drop never increases as a group widens). Same keys as the input.
    """
    out: dict[str, dict[int, float]] = {}
    for name, drops in _normalise(sensitivity_map).items():
        running = math.inf
        mono: dict[int, float] = {}
        for c in sorted(drops):
            running = min(running, drops[c])
            mono[c] = running
        out[name] = mono
    return out


def predict_drop(
    sensitivity_map: SensitivityMap, config: Mapping[str, int], *, monotone: bool = False
) -> float:
    """The score drop FastNAS predicts for ``config``: the sum of its groups' single-group drops
    (additivity assumption). A group at a width wider than every width in the map is at its
    original width and costs 0; ``monotone=True`` uses :func:`monotone_map`.

    Raises :class:`~nasviz.errors.HparamError` for a group the map does not hold or a reduced
    width it has no entry for.
    """
    smap = monotone_map(sensitivity_map) if monotone else _normalise(sensitivity_map)
    total = 0.0
    for name, width in config.items():
        drops = smap.get(name)
        if drops is None:
            msg = (
                f"config names {name!r}, which the sensitivity map does not hold; map groups: "
                f"{sorted(smap)[:8]}{' ...' if len(smap) > 8 else ''}"
            )
            raise HparamError(msg)
        w = int(width)
        if w in drops:
            total += drops[w]
        elif not drops or w > max(drops):
            continue  # the original width: no drop by definition
        else:
            msg = (
                f"{name}: the sensitivity map has no drop for width {w}; it holds widths "
                f"{sorted(drops)} (and the original width, which costs 0)"
            )
            raise HparamError(msg)
    return total


def check_pins(pins: Mapping[str, int] | None, hparams: Choices) -> dict[str, int]:
    """``pins`` as ``{name: int}``, after checking every name is a group of ``hparams`` and
    every width one of its choices (:class:`~nasviz.errors.HparamError` names both).
    """
    choices = choices_of(hparams)
    out: dict[str, int] = {}
    for name, width in (pins or {}).items():
        if name not in choices:
            msg = (
                f"pin {name!r}: not a channel group of this model; groups: "
                f"{sorted(choices)[:8]}{' ...' if len(choices) > 8 else ''}"
            )
            raise HparamError(msg)
        if type(width) is bool or not isinstance(width, int) or width not in choices[name]:
            msg = f"pin {name}={width!r}: not a valid width; choose one of {choices[name]}"
            raise HparamError(msg)
        out[name] = int(width)
    return out


def config_at_drop(
    sensitivity_map: SensitivityMap,
    hparams: Choices,
    tolerated: float,
    pins: Mapping[str, int] | None = None,
) -> dict[str, int]:
    """The subnet the searcher picks for a tolerated drop: every hparam at its smallest choice
    whose drop is at most ``tolerated`` (the original width is always allowed; a choice missing
    from the map is never taken); pinned groups keep their pins. Widgets use this to show any
    point of the bisection.
    """
    pinned = check_pins(pins, hparams) if pins else {}
    config: dict[str, int] = {}
    for name, choices in choices_of(hparams).items():
        if name in pinned:
            config[name] = pinned[name]
            continue
        original = max(choices)
        drops = {int(c): float(d) for c, d in sensitivity_map.get(name, {}).items()}
        ok = [c for c in choices if c == original or drops.get(c, math.inf) <= tolerated]
        config[name] = min(ok)
    return config


def drop_levels(sensitivity_map: SensitivityMap) -> list[float]:
    """The distinct tolerated drops at which some group changes width, with 0, sorted."""
    return sorted({0.0, *(float(d) for v in sensitivity_map.values() for d in v.values())})


# -- the file ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SensitivityMapFile:
    """What a map file holds: the map, each group's choices (``{}`` if unknown) and the full
    model's score (``None`` if unknown).
    """

    sensitivity_map: dict[str, dict[int, float]]
    choices: dict[str, list[int]] = field(default_factory=dict)
    original_score: float | None = None


def _from_state(state: Mapping[str, Any]) -> SensitivityMapFile:
    smap = _normalise(state["sensitivity_map"])
    choices: dict[str, list[int]] = {}
    records = state.get("history")
    if records:
        for event in SearchHistory.from_records(list(records)).events:
            if isinstance(event, SearchStarted):
                choices = {n: sorted(int(c) for c in cs) for n, cs in event.hparams.items()}
    score = state.get("original_score")
    return SensitivityMapFile(smap, choices, None if score is None else float(score))


def save_sensitivity_map(
    source: Mapping[str, Any] | SensitivityMapFile,
    path: str | os.PathLike[str],
    *,
    choices: Choices | None = None,
    original_score: float | None = None,
) -> Path:
    """Write a sensitivity map as JSON at ``path`` (atomically: temp file, then rename).

    ``source`` is a search state (``nv.prune``'s second value: map, original score, and the
    choices from its history), a :class:`SensitivityMapFile`, or a bare map. ``choices`` and
    ``original_score`` fill in or override what the source lacks. Returns the path.
    """
    if isinstance(source, SensitivityMapFile):
        data = source
    elif "sensitivity_map" in source:
        data = _from_state(source)
    else:
        data = SensitivityMapFile(_normalise(source))
    doc = {
        "format": MAP_FILE_FORMAT,
        "version": MAP_FILE_VERSION,
        "original_score": original_score if original_score is not None else data.original_score,
        "choices": choices_of(choices) if choices is not None else data.choices,
        "sensitivity_map": {
            n: {str(c): d for c, d in sorted(v.items())} for n, v in data.sensitivity_map.items()
        },
    }
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(doc, f, indent=1, allow_nan=False)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def _fail(path: Path, what: str) -> SearchError:
    return SearchError(
        f"sensitivity map file {str(path)!r}: {what}; write it with "
        "nasviz.fastnas.save_sensitivity_map(state, path)"
    )


def _number(path: Path, where: str, value: Any) -> float:
    if type(value) is bool or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _fail(path, f"field {where} is {value!r}, not a finite number")
    return float(value)


def load_sensitivity_map(path: str | os.PathLike[str]) -> SensitivityMapFile:
    """Read and validate a map file written by :func:`save_sensitivity_map`.

    Raises :class:`~nasviz.errors.SearchError` naming the file and the bad field.
    """
    p = Path(path)
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise _fail(p, "does not exist") from e
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise _fail(p, f"is not readable JSON ({e})") from e
    if not isinstance(doc, dict) or doc.get("format") != MAP_FILE_FORMAT:
        got = doc.get("format") if isinstance(doc, dict) else type(doc).__name__
        raise _fail(p, f"field 'format' is {got!r}, expected {MAP_FILE_FORMAT!r}")
    if doc.get("version") != MAP_FILE_VERSION:
        raise _fail(
            p,
            f"field 'version' is {doc.get('version')!r}; this nasviz reads version "
            f"{MAP_FILE_VERSION}",
        )
    raw = doc.get("sensitivity_map")
    if not isinstance(raw, dict):
        raise _fail(p, f"field 'sensitivity_map' is {type(raw).__name__}, expected an object")
    smap: dict[str, dict[int, float]] = {}
    for name, drops in raw.items():
        if not isinstance(drops, dict):
            raise _fail(p, f"field sensitivity_map[{name!r}] is not an object")
        entry: dict[int, float] = {}
        for c, d in drops.items():
            try:
                width = int(c)
            except ValueError as e:
                raise _fail(p, f"field sensitivity_map[{name!r}] has width {c!r}") from e
            entry[width] = _number(p, f"sensitivity_map[{name!r}][{c!r}]", d)
        smap[name] = entry
    raw_choices = doc.get("choices", {})
    if not isinstance(raw_choices, dict):
        raise _fail(p, "field 'choices' is not an object")
    choices: dict[str, list[int]] = {}
    for name, cs in raw_choices.items():
        if not isinstance(cs, list) or not all(type(c) is int for c in cs) or not cs:
            raise _fail(p, f"field choices[{name!r}] is {cs!r}, expected a list of widths")
        missing = sorted(set(smap.get(name, {})) - set(cs))
        if missing:
            raise _fail(p, f"field sensitivity_map[{name!r}] has widths {missing} not in choices")
        choices[name] = sorted(cs)
    score = doc.get("original_score")
    return SensitivityMapFile(
        smap, choices, None if score is None else _number(p, "original_score", score)
    )
