"""Tests for nasviz.datasets: the digits splits, loaders and the training helpers."""

from __future__ import annotations

import builtins
from typing import Any

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from nasviz.datasets import (
    DigitsSplits,
    EpochResult,
    digits_loaders,
    evaluate_accuracy,
    load_digits_splits,
    train_classifier,
)
from nasviz.errors import NasvizError
from nasviz.models import DigitsCNN


@pytest.fixture(scope="module")
def splits() -> DigitsSplits:
    return load_digits_splits(seed=0)


def test_split_sizes_sum_to_the_whole_dataset(splits: DigitsSplits) -> None:
    assert splits.sizes == {"train": 1257, "val": 270, "test": 270}
    assert sum(splits.sizes.values()) == 1797


def test_splits_are_disjoint_and_cover_everything(splits: DigitsSplits) -> None:
    train, val, test = (set(s.indices.tolist()) for s in (splits.train, splits.val, splits.test))
    assert not train & val and not train & test and not val & test
    assert train | val | test == set(range(1797))


def test_splits_are_deterministic_and_depend_on_seed(splits: DigitsSplits) -> None:
    again = load_digits_splits(seed=0)
    for a, b in ((splits.train, again.train), (splits.val, again.val), (splits.test, again.test)):
        assert torch.equal(a.indices, b.indices)
        assert torch.equal(a.images, b.images)
        assert torch.equal(a.labels, b.labels)
    other = load_digits_splits(seed=1)
    assert not torch.equal(other.test.indices, splits.test.indices)


def test_values_shapes_and_dtypes(splits: DigitsSplits) -> None:
    from sklearn.datasets import load_digits

    raw = load_digits()
    for split in (splits.train, splits.val, splits.test):
        assert split.images.dtype == torch.float32 and split.labels.dtype == torch.int64
        assert split.images.shape == (len(split), 1, 8, 8)
        assert split.images.min() >= 0.0 and split.images.max() <= 1.0
        assert set(split.labels.tolist()) == set(range(10))  # stratified: all classes present
        row = int(split.indices[0])
        expected = torch.as_tensor(raw.images[row], dtype=torch.float32) / 16.0
        assert torch.equal(split.images[0, 0], expected)
        assert int(split.labels[0]) == int(raw.target[row])
    assert float(splits.train.images.max()) == 1.0  # pixel 16 maps to exactly 1


def test_loaders_batches_and_order(splits: DigitsSplits) -> None:
    loaders = digits_loaders(batch_size=50, seed=0, eval_batch_size=100, splits=splits)
    epoch1 = [(x, y) for x, y in loaders.train]
    assert epoch1[0][0].shape == (50, 1, 8, 8) and epoch1[0][1].shape == (50,)
    assert [len(y) for _, y in epoch1][-1] == 1257 - 25 * 50
    labels1 = torch.cat([y for _, y in epoch1])
    assert not torch.equal(labels1, splits.train.labels)  # train is shuffled...
    assert torch.equal(labels1.sort().values, splits.train.labels.sort().values)  # ...not resampled
    labels2 = torch.cat([y for _, y in loaders.train])
    assert not torch.equal(labels2, labels1)  # and reshuffled every epoch
    again = digits_loaders(batch_size=50, seed=0, eval_batch_size=100, splits=splits)
    assert torch.equal(torch.cat([y for _, y in again.train]), labels1)  # seeded shuffle
    assert [len(y) for _, y in loaders.val] == [100, 100, 70]
    val_labels = torch.cat([y for _, y in loaders.val])
    assert torch.equal(val_labels, splits.val.labels)  # val is not shuffled
    test_labels = torch.cat([y for _, y in loaders.test])
    assert torch.equal(test_labels, splits.test.labels)


def test_default_loaders_use_seeded_splits() -> None:
    loaders = digits_loaders()
    images, _ = next(iter(loaders.train))
    assert images.shape == (32, 1, 8, 8)
    assert len(loaders.train.dataset) == 1257  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"val_fraction": 0.0}, "val_fraction"),
        ({"test_fraction": 1.5}, "test_fraction"),
        ({"val_fraction": 0.5, "test_fraction": 0.5}, "leaves no training"),
    ],
)
def test_bad_fractions_raise(kwargs: dict[str, float], match: str) -> None:
    with pytest.raises(NasvizError, match=match):
        load_digits_splits(0, **kwargs)


def test_bad_batch_size_raises(splits: DigitsSplits) -> None:
    with pytest.raises(NasvizError, match="batch_size=0"):
        digits_loaders(batch_size=0, splits=splits)


def test_missing_sklearn_gives_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = builtins.__import__

    def fake_import(name: str, *args: Any, **kwargs: Any) -> Any:
        if name.startswith("sklearn"):
            raise ImportError("no sklearn")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(NasvizError, match="scikit-learn") as info:
        load_digits_splits()
    assert isinstance(info.value.__cause__, ImportError)


def test_evaluate_accuracy_known_answer_and_mode_restored() -> None:
    # A "model" that predicts the class given in the first feature: accuracy is known exactly.
    x = torch.tensor([[0.0], [1.0], [2.0], [1.0]])
    y = torch.tensor([0, 1, 2, 0])
    model = nn.Linear(1, 3)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[-10.0], [0.0], [10.0]]))
        model.bias.copy_(torch.tensor([5.0, 0.0, -15.0]))
    model.train()
    loader = DataLoader(TensorDataset(x, y), batch_size=3)
    assert evaluate_accuracy(model, loader) == pytest.approx(3 / 4)
    assert model.training
    with pytest.raises(NasvizError, match="no samples"):
        evaluate_accuracy(model, [])


def test_training_input_checks() -> None:
    loader = DataLoader(TensorDataset(torch.zeros(4, 1), torch.zeros(4, dtype=torch.long)))
    with pytest.raises(NasvizError, match="epochs=0"):
        train_classifier(nn.Linear(1, 2), loader, epochs=0)
    with pytest.raises(NasvizError, match="lr=-1"):
        train_classifier(nn.Linear(1, 2), loader, epochs=1, lr=-1.0)
    with pytest.raises(NasvizError, match="no batches"):
        train_classifier(nn.Linear(1, 2), [], epochs=1)


def test_quick_training_reaches_85_percent(splits: DigitsSplits) -> None:
    # One thread: tiny convs gain little from two, and a single thread keeps this test quick when
    # other processes compete for the cores (two OpenMP threads then slow down many times over).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        model = DigitsCNN().eval()
        loaders = digits_loaders(batch_size=32, seed=0, splits=splits)
        seen: list[EpochResult] = []
        history = train_classifier(
            model, loaders.train, epochs=2, lr=1e-2, val_loader=loaders.val, progress=seen.append
        )
        accuracy = evaluate_accuracy(model, loaders.val)
    finally:
        torch.set_num_threads(threads)
    assert seen == history and [r.epoch for r in history] == [1, 2]
    assert history[1].train_loss < history[0].train_loss
    assert history[0].lr == pytest.approx(1e-2) and history[1].lr < 1e-2  # cosine schedule
    assert not model.training  # the mode it had before training
    assert history[1].val_accuracy == pytest.approx(accuracy)
    assert accuracy > 0.85
