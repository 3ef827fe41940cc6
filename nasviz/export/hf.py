"""Hugging Face transformers models after ``nv.export``: the config carries the new widths, and
``save_pretrained`` round-trips (checked).

:func:`sync_hf_config` measures the exported modules and writes what a transformers config can
say: the stream (``hidden_size``/``n_embd``/``d_model``), the FFN width per stack
(``intermediate_size``, ``n_inner``, ``d_ff``, ``encoder_ffn_dim``, ``decoder_ffn_dim``), the head
counts (``num_attention_heads``, ``n_head``, ``num_heads``, ``encoder_attention_heads``,
``decoder_attention_heads``, ``num_key_value_heads``) and the fixed head size where the config
has one (``head_dim``, ``d_kv``); the attention modules' stored counts (``num_heads``,
``num_key_value_groups``, ``all_head_size``, ``inner_dim`` ...) are updated too, and T5's
decoder-output scale ``model_dim ** -0.5`` is folded into its final norm when the stream
narrows (so the reloaded model computes the same). The
``"export"`` mode calls it for every model that has a transformers ``config``.

A config has one value per key, so a result whose widths differ per layer cannot be described:
:func:`save_pretrained` refuses it, naming the differing layers and the two fixes (tie the roles
across blocks at convert, ``FastNASConfig(tie_roles=True)``; or keep nasviz's own format,
``nv.save``/``nv.restore``). Otherwise it writes ``save_pretrained`` into a temporary directory
next to the target, reloads it with ``from_pretrained``, compares the outputs on the dummy input
and only then renames the directory onto the target. transformers is imported only there
(``pip install nasviz[hf]``).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nasviz.errors import ExportError
from nasviz.export._check import ExportReport, as_args, compare, flat_tensors

__all__ = ["hf_widths", "is_hf_model", "save_pretrained", "sync_hf_config"]

#: attribute holding an attention module's fixed head size, per library convention
_HEAD_DIM = ("head_dim", "attention_head_size", "key_value_proj_dim")
#: (query, key) projection child names
_QK = (("q_proj", "k_proj"), ("query", "key"), ("q", "k"))
#: FFN config key -> (module-name suffixes of the first FFN projection, stack prefix or "")
_FFN: dict[str, tuple[tuple[str, ...], str]] = {
    "intermediate_size": (("intermediate.dense", "mlp.up_proj", "mlp.fc1"), ""),
    "n_inner": (("mlp.c_fc",), ""),
    "d_ff": (("DenseReluDense.wi", "DenseReluDense.wi_0"), ""),
    "encoder_ffn_dim": (("fc1",), "encoder"),
    "decoder_ffn_dim": (("fc1",), "decoder"),
}
_HEADS_KEYS = ("num_attention_heads", "n_head", "num_heads")
_STREAM_KEYS = ("hidden_size", "n_embd", "d_model")


def is_hf_model(model: nn.Module) -> bool:
    """A transformers model: it has a ``config`` with ``to_dict`` and a ``from_pretrained``."""
    cfg = getattr(model, "config", None)
    return hasattr(cfg, "to_dict") and hasattr(type(model), "from_pretrained")


def _width(m: nn.Module) -> int | None:
    if isinstance(m, nn.Linear):
        return m.out_features
    nf = getattr(m, "nf", None)  # transformers' Conv1D
    return int(nf) if isinstance(nf, int) else None


def _in_stack(name: str, stack: str) -> bool:
    return not stack or name.startswith(f"{stack}.") or f".{stack}." in f".{name}"


def _attention(model: nn.Module) -> list[tuple[str, nn.Module, int, int, int]]:
    """``(name, module, heads, kv_heads, head_dim)`` of every attention module."""
    out = []
    for name, m in model.named_modules():
        hd = next((getattr(m, a) for a in _HEAD_DIM if isinstance(getattr(m, a, None), int)), None)
        if hd is None or hd <= 0:
            continue
        c_attn = getattr(m, "c_attn", None)  # GPT-2: fused q, k, v
        if c_attn is not None and _width(c_attn) is not None and getattr(m, "q_attn", None) is None:
            heads = int(_width(c_attn) or 0) // 3 // hd
            out.append((name, m, heads, heads, hd))
            continue
        for q, k in _QK:
            qm, km = getattr(m, q, None), getattr(m, k, None)
            if isinstance(qm, nn.Linear) and isinstance(km, nn.Linear):
                out.append((name, m, qm.out_features // hd, km.out_features // hd, hd))
                break
    return out


def _uniform(key: str, values: dict[str, int], out: dict[str, int], bad: list[str]) -> None:
    if not values:
        return
    distinct = sorted(set(values.values()))
    if len(distinct) == 1:
        out[key] = distinct[0]
        return
    per = {v: [n for n, w in values.items() if w == v] for v in distinct}
    shown = "; ".join(
        f"{v}: {', '.join(ns[:3])}{' ...' if len(ns) > 3 else ''}" for v, ns in per.items()
    )
    bad.append(f"{key} differs per layer ({shown})")


def hf_widths(model: nn.Module) -> tuple[dict[str, int], list[str]]:
    """``(config updates, problems)``: the widths the exported ``model`` has, under the keys its
    config uses; ``problems`` names every key whose width differs per layer.
    """
    cfg = model.config
    out: dict[str, int] = {}
    bad: list[str] = []
    modules = dict(model.named_modules())
    for key, (suffixes, stack) in _FFN.items():
        if not hasattr(cfg, key) or (key == "intermediate_size" and hasattr(cfg, "d_ff")):
            continue
        found = {
            n: w
            for n, m in modules.items()
            if n.endswith(suffixes) and _in_stack(n, stack) and (w := _width(m)) is not None
        }
        _uniform(key, found, out, bad)
    attn = _attention(model)
    enc_dec = hasattr(cfg, "encoder_attention_heads")
    for key in ("encoder_attention_heads", "decoder_attention_heads") if enc_dec else _HEADS_KEYS:
        if key not in type(cfg).__dict__ and key not in cfg.__dict__ and not hasattr(cfg, key):
            continue
        stack = key.split("_")[0] if enc_dec else ""
        _uniform(key, {n: h for n, _, h, _, _ in attn if _in_stack(n, stack)}, out, bad)
        if not enc_dec:
            break
    if hasattr(cfg, "num_key_value_heads") and attn:
        _uniform("num_key_value_heads", {n: kv for n, _, _, kv, _ in attn}, out, bad)
    for key in ("head_dim", "d_kv"):
        if attn and isinstance(getattr(cfg, key, None), int):
            _uniform(key, {n: hd for n, _, _, _, hd in attn}, out, bad)
    get_emb: Any = getattr(model, "get_input_embeddings", None)
    emb = get_emb() if callable(get_emb) else None
    stream = getattr(emb, "embedding_dim", None)
    if stream is None:  # ViT: the patch projection
        proj = getattr(emb, "projection", None)
        stream = getattr(proj, "out_channels", None)
    for key in _STREAM_KEYS:
        if isinstance(getattr(cfg, key, None), int) and isinstance(stream, int):
            out[key] = stream
            break
    return out, bad


def sync_hf_config(model: nn.Module) -> dict[str, int]:
    """Write the exported widths into ``model.config`` and the attention modules' stored counts;
    returns the changed config keys (old values differ). Widths that differ per layer are left
    as they were (``save_pretrained`` refuses them).
    """
    if not is_hf_model(model):
        return {}
    widths, _ = hf_widths(model)
    cfg: Any = model.config
    changed = {k: v for k, v in widths.items() if getattr(cfg, k, None) != v}
    for key in _STREAM_KEYS:
        if key in changed:
            _fold_output_scale(model, int(getattr(cfg, key)), changed[key])
    for key, value in changed.items():
        setattr(cfg, key, value)
    for _, m, heads, kv, hd in _attention(model):
        for attr, value in (
            ("num_heads", heads), ("num_attention_heads", heads), ("n_head", heads),
            ("n_heads", heads), ("num_key_value_heads", kv), ("all_head_size", heads * hd),
            ("inner_dim", heads * hd), ("num_key_value_groups", heads // max(kv, 1)),
        ):  # fmt: skip
            if isinstance(getattr(m, attr, None), int) and not isinstance(getattr(m, attr), bool):
                setattr(m, attr, value)
    return changed


def _fold_output_scale(model: nn.Module, old: int, new: int) -> None:
    """T5 scales the decoder output by ``model_dim ** -0.5`` (``model_dim = config.d_model``)
    before a tied LM head. A narrower stream changes that constant on reload, so it is folded
    into the decoder's final RMS norm (its output is linear in its weight):
    ``w * sqrt(new / old)`` with ``model_dim = new`` computes what ``w`` with ``old`` did.
    Without such a norm nothing is changed (``save_pretrained``'s check then refuses the model).
    """
    cfg: Any = getattr(model, "config", None)
    dim = getattr(model, "model_dim", None)
    if not getattr(cfg, "scale_decoder_outputs", False) or dim != old:
        return
    norm = getattr(getattr(model, "decoder", None), "final_layer_norm", None)
    weight = getattr(norm, "weight", None)
    if not isinstance(weight, nn.Parameter):
        return
    with torch.no_grad():
        weight.mul_((new / old) ** 0.5)
    setattr(model, "model_dim", new)  # noqa: B010  # a plain attribute, not a submodule


def save_pretrained(
    model: nn.Module,
    path: str | os.PathLike[str],
    dummy_input: Any,
    *,
    tolerance: float = 1e-5,
    output: Callable[[Any], Any] | None = None,
) -> ExportReport:
    """``model.save_pretrained(path)``, checked: written to a temporary directory, reloaded with
    ``from_pretrained``, run on ``dummy_input`` (a dict of kwargs, a tuple or a tensor) and
    compared with ``model`` (max abs diff within ``tolerance`` times the output scale) before
    the directory is renamed onto ``path``. ``model`` is an exported (plain) transformers model;
    ``output`` picks the tensors to compare from a forward's output (default: all of them).
    """
    try:
        import transformers  # noqa: F401
    except ImportError as e:  # pragma: no cover - depends on the environment
        msg = "save_pretrained needs transformers: pip install nasviz[hf]"
        raise ExportError(msg) from e
    if not is_hf_model(model):
        msg = (
            f"save_pretrained needs a Hugging Face transformers model (with a config and "
            f"from_pretrained), got {type(model).__name__}; use nv.save/nv.restore instead"
        )
        raise ExportError(msg)
    if any(type(m).__module__.startswith("nasviz.") for m in model.modules()):
        msg = (
            "the model still has dynamic layers; export it first: small = nv.export(model), "
            "then nv.save_pretrained(small, path, dummy_input)"
        )
        raise ExportError(msg)
    sync_hf_config(model)
    _, bad = hf_widths(model)
    if bad:
        msg = (
            f"{type(model).__name__} cannot be saved with save_pretrained: a transformers config "
            f"holds one width per key, but {'; '.join(bad)}. Fix: convert with tie_roles "
            '(nv.convert(model, mode=[("fastnas", {"tie_roles": True, ...})], dummy_input=x)) so '
            "every block keeps the same widths, or keep per-layer widths with nv.save(model, "
            "path) / nv.restore(fresh_model, path)"
        )
        raise ExportError(msg)
    _check_shapes(model)
    target = Path(path).expanduser()
    if not target.parent.is_dir():
        msg = f"path {str(target)!r}: the directory {str(target.parent)!r} does not exist"
        raise ExportError(msg)
    t0 = time.perf_counter()
    pick = output or (lambda o: o)
    reference = [t.detach() for t in flat_tensors(pick(_forward(model, dummy_input)))]
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        model.save_pretrained(tmp)  # type: ignore[operator]
        loaded = type(model).from_pretrained(tmp)  # type: ignore[attr-defined]
        got = flat_tensors(pick(_forward(loaded, dummy_input)))
        diff, limit = compare(reference, got, float(tolerance), "the from_pretrained model")
        if not diff <= limit:
            msg = (
                f"from_pretrained does not reproduce the model: max |diff| = {diff:.3g} > "
                f"{limit:.3g}; {str(target)!r} was not written"
            )
            raise ExportError(msg)
        size = sum(f.stat().st_size for f in tmp.rglob("*") if f.is_file())
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old.", dir=target.parent))
            os.replace(target, old / "x")
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return ExportReport(
        "save_pretrained", target, size, diff, limit, "transformers", time.perf_counter() - t0
    )


def _check_shapes(model: nn.Module) -> None:
    """Refuse a model whose config, rebuilt empty, has other tensor shapes than its weights (a
    config that derives the head size as hidden / heads cannot describe heads cut without the
    stream).
    """
    with torch.device("meta"):
        fresh = type(model)(model.config)
    want = {k: tuple(v.shape) for k, v in fresh.state_dict().items()}
    wrong = [
        f"{k} {tuple(v.shape)} (config gives {want[k]})"
        for k, v in model.state_dict().items()
        if k in want and tuple(v.shape) != want[k]
    ]
    if wrong:
        msg = (
            f"the {type(model.config).__name__} cannot describe this {type(model).__name__}: "
            f"{len(wrong)} tensor(s) differ from what the updated config builds, e.g. "
            f"{'; '.join(wrong[:3])}. Configs that derive the head size as hidden size / heads "
            "need heads and the stream cut together (keep hidden / heads at the original head "
            "size), and one stream width per model; otherwise keep the result with "
            "nv.save(model, path) / nv.restore(fresh_model, path)"
        )
        raise ExportError(msg)


def _forward(model: nn.Module, dummy_input: Any) -> Any:
    args, kwargs = as_args(dummy_input)
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            return model(*args, **kwargs)
    finally:
        model.train(was)
