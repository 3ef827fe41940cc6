"""Issue #15 case 1: an interrupted or failed ``nv.prune`` leaves the model exactly as it was,
and the checkpoint written before the interrupt still resumes the search.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from _convnet import ConvBN, assert_same, convnet, score, snapshot
from torch import nn

import nasviz as nv
from nasviz.errors import SearchError

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


class Interrupting:
    """The user's score_func; its ``at``-th call raises ``error`` (Ctrl-C by default)."""

    def __init__(self, at: int, error: BaseException | None = None) -> None:
        self.at, self.calls = at, 0
        self.error = error if error is not None else KeyboardInterrupt()

    def __call__(self, model: nn.Module) -> float:
        self.calls += 1
        if self.calls == self.at:
            raise self.error
        return score(model)


def _prune(model: nn.Module, x: object, loader: object, f: object, **config: object) -> dict:
    _, state = nv.prune(
        model,
        constraints={"flops": "50%"},
        dummy_input=x,
        config={"score_func": f, "data_loader": loader, **config},
    )
    return state


@pytest.mark.parametrize("at", [1, 3, 6, 8])  # 8: the last score of this prune
def test_ctrl_c_at_any_score_leaves_the_model_as_it_was(at: int) -> None:
    model, x, loader = convnet()
    nv.select(model, {"conv1.out_channels": 12, "conv2.out_channels": 16})
    model.eval()
    model.conv2.train()  # a mixed training state must come back too
    before = snapshot(model)
    with pytest.raises(KeyboardInterrupt):
        _prune(model, x, loader, Interrupting(at))
    assert_same(model, before)


def test_a_failed_prune_leaves_the_model_as_it_was() -> None:
    model, x, loader = convnet()
    before = snapshot(model)
    with pytest.raises(SearchError, match="RuntimeError"):
        _prune(model, x, loader, Interrupting(5, RuntimeError("boom")))
    assert_same(model, before)


def test_a_prune_that_converts_and_fails_leaves_the_plain_model() -> None:
    _, x, loader = convnet()
    raw = ConvBN()
    before = snapshot_plain(raw)
    with pytest.raises(KeyboardInterrupt):
        nv.prune(
            raw,
            mode=[("fastnas", nv.FastNASConfig.with_divisor(4))],
            constraints={"flops": "50%"},
            dummy_input=x,
            config={"score_func": Interrupting(4), "data_loader": loader},
        )
    assert not nv.state.is_converted(raw)
    assert type(raw) is ConvBN
    after = snapshot_plain(raw)
    assert after["objects"] == before["objects"]
    assert all(v.equal(after["values"][k]) for k, v in before["values"].items())


def snapshot_plain(model: nn.Module) -> dict:
    return {
        "objects": {n: id(t) for n, t in [*model.named_parameters(), *model.named_buffers()]},
        "values": {k: v.detach().clone() for k, v in model.state_dict().items()},
    }


def test_an_interrupted_prune_resumes_from_its_checkpoint_to_the_same_subnet(
    tmp_path: Path,
) -> None:
    ckpt = tmp_path / "search.pt"
    reference = _prune(convnet()[0], *convnet()[1:], score)  # type: ignore[call-arg]  # test data typed loosely
    model, x, loader = convnet()
    with pytest.raises(KeyboardInterrupt):
        _prune(model, x, loader, Interrupting(5), checkpoint=str(ckpt))
    assert ckpt.exists()  # the entries scored before the interrupt are kept
    counted = Interrupting(0)
    resumed = _prune(model, x, loader, counted, checkpoint=str(ckpt))
    assert resumed["best"]["config"] == reference["best"]["config"]
    assert resumed["sensitivity_map"] == reference["sensitivity_map"]
    full = sum(len(v) for v in reference["sensitivity_map"].values()) + 1
    assert counted.calls < full + 4  # the entries before the interrupt were not scored again
    assert nv.get_subnet_config(model) == reference["best"]["config"]
