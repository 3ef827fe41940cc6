"""The one reader/writer of the search checkpoint format."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from nasviz.errors import SearchError
from nasviz.search.checkpoint import load_search_state, read_checkpoint, write_checkpoint


def test_write_then_read_round_trips_and_makes_the_directory(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "search.pt"
    state = {"sensitivity_map": {"h": {4: 0.5}}, "history": [{"event": "X"}]}
    write_checkpoint(state, path)
    assert read_checkpoint(path) == state
    assert load_search_state(path) == state
    assert load_search_state(state) == state  # a state dict is taken as is


def test_missing_file_is_none_for_a_searcher_and_an_error_for_a_reader(tmp_path: Path) -> None:
    assert read_checkpoint(tmp_path / "none.pt") is None
    assert read_checkpoint(None) is None
    with pytest.raises(SearchError, match="does not exist"):
        load_search_state(tmp_path / "none.pt")


def test_not_a_state_dict_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "list.pt"
    torch.save([1, 2], path)
    with pytest.raises(SearchError, match="holds a list"):
        read_checkpoint(path)
    with pytest.raises(SearchError, match="has no 'history'"):
        load_search_state({"sensitivity_map": {}})
