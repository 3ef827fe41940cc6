"""The headless end-to-end demo (``make demo`` / ``python -m nasviz demo``).

Trains the digits CNN on scikit-learn's bundled digits, prunes it to a FLOPs budget with FastNAS,
exports and saves the subnet, restores it in a fresh process and checks the outputs match.
Everything it reports is measured in this run; it returns the figures as a dict (and exits
non-zero from the command line when a check fails).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

import nasviz as nv
from nasviz.datasets import EpochResult, digits_loaders, evaluate_accuracy, train_classifier
from nasviz.errors import ConstraintError, NasvizError
from nasviz.models import DigitsCNN
from nasviz.search.constraints import Constraints
from nasviz.search.progress import TqdmProgress

__all__ = ["DEFAULT_OUT_DIR", "DemoResult", "check_demo_args", "demo_config", "run_demo"]

DemoResult = dict[str, Any]
#: where the demo writes its files unless told otherwise (relative to the working directory)
DEFAULT_OUT_DIR = "nasviz-demo"
#: the shape of one digits image (batch of one)
_DIGIT = (1, 1, 8, 8)


def demo_config(divisor: int = 4) -> Any:
    """A pruning config for the small digits models: widths in multiples of ``divisor`` for
    convs, norms and linears (the reference's 32 leaves a 48-channel layer two choices).

    The notebooks use 4 (fewer map entries, faster); ``make demo`` uses 2, so the search can use
    a FLOPs budget to within a few percent on 48-channel layers (one step of 4 channels in the
    residual block costs 6.6% of this model's FLOPs).
    """
    conv = {"channel_divisor": divisor}
    feat = {"feature_divisor": divisor}
    return nv.FastNASConfig(**{"nn.Conv2d": conv, "nn.BatchNorm2d": feat, "nn.Linear": feat})


def check_demo_args(
    flops: str = "60%",
    epochs: int = 8,
    width: int = 48,
    calib_batches: int = 20,
    divisor: int = 2,
    threads: int | None = None,
) -> None:
    """Check the demo's arguments before any work (no data loaded, nothing trained).

    Raises :class:`~nasviz.errors.NasvizError` naming the option, its value and the fix; the
    FLOPs limit is resolved against the (untrained, same-cost) model, so ``"150%"`` or ``"60"``
    (60 FLOPs, probably meant as ``"60%"``) fail here, not after training.
    """
    for name, value, low in (
        ("epochs", epochs, 1),
        ("calib-batches", calib_batches, 1),
        ("divisor", divisor, 1),
        ("threads", 1 if threads is None else threads, 1),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            msg = f"--{name} {value!r} must be an integer of at least {low}"
            raise NasvizError(msg)
    if isinstance(width, bool) or not isinstance(width, int) or width < 2 * divisor:
        msg = (
            f"--width {width!r} is too small: the DigitsCNN width must be an integer of at least "
            f"{2 * divisor} (twice the channel divisor {divisor}) so there is something to prune"
        )
        raise NasvizError(msg)
    try:
        limits = Constraints({"flops": flops})  # syntax and percentage range
        if not limits["flops"].relative:  # an absolute limit: against the model's cost
            cost = nv.profile(DigitsCNN(width=width), torch.zeros(_DIGIT))
            limits.resolve(full_flops=cost.flops, full_params=cost.params)
    except ConstraintError as e:
        msg = f"--flops {flops} is invalid: {e}"
        raise NasvizError(msg) from e


def run_demo(
    flops: str = "60%",
    epochs: int = 8,
    width: int = 48,
    calib_batches: int = 20,
    divisor: int = 2,
    seed: int = 0,
    threads: int | None = None,
    out_dir: str | os.PathLike[str] | None = None,
    log: Callable[[str], None] | None = None,
    progress: bool = False,
) -> DemoResult:
    """Train, prune to ``flops``, export, save, restore in a fresh process; return the figures.

    The arguments are checked first (:func:`check_demo_args`). Files go to ``out_dir``
    (default ``./nasviz-demo``). ``progress=True`` shows tqdm bars on stderr for training, the
    sensitivity map and the binary search (driven by the engine's search events).
    """
    check_demo_args(flops, epochs, width, calib_batches, divisor, threads)
    say = log or (lambda _msg: None)
    out = Path(out_dir if out_dir is not None else DEFAULT_OUT_DIR).resolve()
    if threads is not None:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    times: dict[str, float] = {}
    loaders = digits_loaders(batch_size=64, seed=seed)

    say(f"training DigitsCNN(width={width}) on the digits for {epochs} epochs ...")
    t = time.perf_counter()
    model: nn.Module = DigitsCNN(width=width)
    bar = tqdm(total=epochs, desc="training", unit="epoch", file=sys.stderr, disable=not progress)

    def epoch_done(r: EpochResult) -> None:
        bar.set_postfix_str(f"loss={r.train_loss:.4f}")
        bar.update(1)

    try:
        train_classifier(model, loaders.train, epochs=epochs, lr=1e-2, progress=epoch_done)
    finally:
        bar.close()
    times["train"] = time.perf_counter() - t
    model.eval()
    val_full = evaluate_accuracy(model, loaders.val)
    test_full = evaluate_accuracy(model, loaders.test)
    x = next(iter(loaders.val))[0][:2]
    prof_full = nv.profile(model, x)
    say(f"trained in {times['train']:.1f} s: val {val_full:.4f}, test {test_full:.4f}")

    # calibration batches drawn with their own seed, so the search does not depend on how many
    # batches training consumed from the shuffled train loader
    calib_loader = torch.utils.data.DataLoader(
        loaders.train.dataset,
        batch_size=64,
        shuffle=True,
        generator=torch.Generator().manual_seed(seed),
    )
    t = time.perf_counter()
    model = nv.convert(model, mode=[("fastnas", demo_config(divisor))], dummy_input=x)
    times["convert"] = time.perf_counter() - t
    say(f"pruning to flops <= {flops}: sensitivity map, then binary search ...")
    t = time.perf_counter()
    model, state = nv.prune(
        model,
        mode="fastnas",
        constraints={"flops": flops},
        dummy_input=x,
        # the evaluator form: nasviz owns the scoring loop, caches activations and re-calibrates
        # BatchNorm only downstream of each change (an opaque score_func works too, slower)
        config={
            "data_loader": calib_loader,
            "max_iter_data_loader": calib_batches,
            "score_loader": loaders.val,
            "metric": "accuracy",
            "callbacks": [TqdmProgress(file=sys.stderr)] if progress else [],
        },
    )
    times["prune"] = time.perf_counter() - t

    t = time.perf_counter()
    small = nv.export(model)
    small.eval()
    times["export"] = time.perf_counter() - t
    val_pruned = evaluate_accuracy(small, loaders.val)
    test_pruned = evaluate_accuracy(small, loaders.test)
    prof_small = nv.profile(small, x)

    out.mkdir(parents=True, exist_ok=True)
    ckpt = out / "digits_pruned.pt"
    say(f"saving to {out} and restoring in a fresh process ...")
    t = time.perf_counter()
    nv.save(model, ckpt)
    times["save"] = time.perf_counter() - t
    images = next(iter(loaders.test))[0]
    with torch.no_grad():
        expected = small(images)
    torch.save({"images": images, "expected": expected}, out / "check.pt")
    t = time.perf_counter()
    restored = _restore_in_fresh_process(ckpt, out / "check.pt", width)
    times["restore (fresh process)"] = time.perf_counter() - t

    result: DemoResult = {
        "flops_limit": flops,
        "flops_full": prof_full.flops,
        "flops_pruned": prof_small.flops,
        "flops_kept": prof_small.flops / prof_full.flops,
        "params_full": prof_full.params,
        "params_pruned": prof_small.params,
        "val_full": val_full,
        "val_pruned": val_pruned,
        "test_full": test_full,
        "test_pruned": test_pruned,
        "search_score": state["best"]["score"],
        "subnet": state["best"]["config"],
        "restore_max_abs_diff": restored["max_abs_diff"],
        "restore_ok": restored["ok"],
        "checkpoint": str(ckpt),
        "checkpoint_bytes": ckpt.stat().st_size,
        "seconds": times,
    }
    return result


_RESTORE_SCRIPT = """
import json, sys, torch
import nasviz as nv
from nasviz.models import DigitsCNN
model = nv.restore(DigitsCNN(width=int(sys.argv[3])), sys.argv[1])
small = nv.export(model).eval()
check = torch.load(sys.argv[2], weights_only=True)
with torch.no_grad():
    out = small(check["images"])
diff = (out - check["expected"]).abs().max().item()
print(json.dumps({"max_abs_diff": diff, "ok": bool(diff <= 1e-5)}))
"""


def _restore_in_fresh_process(ckpt: Path, check: Path, width: int) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-c", _RESTORE_SCRIPT, str(ckpt), str(check), str(width)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        msg = f"restoring in a fresh process failed:\n{proc.stderr}"
        raise RuntimeError(msg)
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def format_report(r: DemoResult) -> str:
    """The demo's figures as a plain-text table."""
    rows = [
        ("", "full", "pruned"),
        ("FLOPs", f"{r['flops_full']:,.0f}", f"{r['flops_pruned']:,.0f} ({r['flops_kept']:.1%})"),
        ("params", f"{r['params_full']:,.0f}", f"{r['params_pruned']:,.0f}"),
        ("val accuracy", f"{r['val_full']:.4f}", f"{r['val_pruned']:.4f}"),
        ("test accuracy", f"{r['test_full']:.4f}", f"{r['test_pruned']:.4f}"),
    ]
    w0 = max(len(a) for a, _, _ in rows)
    w1 = max(len(b) for _, b, _ in rows)
    lines = [f"{a:<{w0}}  {b:>{w1}}  {c}" for a, b, c in rows]
    lines.append("")
    lines.append(f"constraint: flops <= {r['flops_limit']}; subnet: {r['subnet']}")
    lines.append("time per phase: " + ", ".join(f"{k} {v:.2f} s" for k, v in r["seconds"].items()))
    lines.append(
        f"saved {r['checkpoint']} ({r['checkpoint_bytes'] / 1024:.1f} KiB); restored in a fresh "
        f"process: max |diff| = {r['restore_max_abs_diff']:.2e} -> "
        f"{'OK' if r['restore_ok'] else 'MISMATCH'}"
    )
    return "\n".join(lines)
