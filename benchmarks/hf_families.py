"""Per-family table: what nasviz finds in each transformer family, and what pruning gives.

Hugging Face transformers models (GPT-2, BERT, Llama with grouped-query attention, BART, T5,
ViT, Whisper) from tiny configs with random weights (``HF_HUB_OFFLINE=1``, nothing downloaded;
hidden 64, 4 heads, FFN 128, 2 layers), and torch's own attention layers
(``nn.MultiheadAttention``, ``nn.TransformerEncoderLayer``, ``nn.TransformerDecoderLayer``, each
between an input projection and an output head). For each model:

* ``convert s``: ``nv.convert(model, mode=[("fastnas", cfg)], dummy_input=x)`` wall time
  (capture with ``torch.export`` or fx, analysis, conversion, channel sort, self-check);
* ``hparams``: searchable groups; ``static``: static layer dims, with the most common reason;
* ``FLOPs kept``: every hparam at its choice nearest half its original width, FLOPs over full;
* ``max |diff|``: ``nv.export`` of that subnet against the subnet, on the main output (``logits``).

``cfg`` is divisor 1 for Linear/Conv1d features (a tiny model has few channels) and the
defaults otherwise. Transformers models are skipped if transformers is not installed.

Usage::

    .venv/bin/python benchmarks/hf_families.py [--threads 1] [--tie-roles]
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

import nasviz as nv

os.environ.setdefault("HF_HUB_OFFLINE", "1")

CFG: dict[str, Any] = {"nn.Linear": {"feature_divisor": 1}, "nn.Conv1d": {"channel_divisor": 1}}
H, HEADS, FFN, LAYERS, VOCAB = 64, 4, 128, 2, 100

Inputs = Any
Builder = Callable[[], tuple[nn.Module, Inputs]]


def _ids(b: int, s: int) -> torch.Tensor:
    return torch.randint(3, VOCAB, (b, s))


def _hf() -> dict[str, Builder]:
    T: Any = importlib.import_module("transformers")  # optional; configs typed loosely here

    common = {"vocab_size": VOCAB, "max_position_embeddings": 32}

    def gpt2() -> tuple[nn.Module, Inputs]:
        cfg = T.GPT2Config(vocab_size=VOCAB, n_embd=H, n_layer=LAYERS, n_head=HEADS,
                           n_inner=FFN, n_positions=32, use_cache=False)  # fmt: skip
        return T.GPT2LMHeadModel(cfg), {"input_ids": _ids(2, 8)}

    def bert() -> tuple[nn.Module, Inputs]:
        cfg = T.BertConfig(hidden_size=H, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                           intermediate_size=FFN, **common)  # fmt: skip
        return T.BertForMaskedLM(cfg), {"input_ids": _ids(2, 8)}

    def llama() -> tuple[nn.Module, Inputs]:
        cfg = T.LlamaConfig(hidden_size=H, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                            num_key_value_heads=2, intermediate_size=FFN, use_cache=False,
                            **common)  # fmt: skip
        return T.LlamaForCausalLM(cfg), {"input_ids": _ids(2, 8)}

    def bart() -> tuple[nn.Module, Inputs]:
        cfg = T.BartConfig(d_model=H, encoder_layers=LAYERS, decoder_layers=LAYERS,
                           encoder_attention_heads=HEADS, decoder_attention_heads=HEADS,
                           encoder_ffn_dim=FFN, decoder_ffn_dim=FFN, use_cache=False,
                           **common)  # fmt: skip
        x = {"input_ids": _ids(2, 8), "decoder_input_ids": _ids(2, 6)}
        return T.BartForConditionalGeneration(cfg), x

    def t5() -> tuple[nn.Module, Inputs]:
        cfg = T.T5Config(vocab_size=VOCAB, d_model=H, d_kv=H // HEADS, d_ff=FFN,
                         num_layers=LAYERS, num_heads=HEADS, use_cache=False)  # fmt: skip
        x = {"input_ids": _ids(2, 8), "decoder_input_ids": _ids(2, 6)}
        return T.T5ForConditionalGeneration(cfg), x

    def vit() -> tuple[nn.Module, Inputs]:
        cfg = T.ViTConfig(hidden_size=H, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                          intermediate_size=FFN, image_size=32, patch_size=8,
                          num_labels=10)  # fmt: skip
        return T.ViTForImageClassification(cfg), {"pixel_values": torch.randn(2, 3, 32, 32)}

    def whisper() -> tuple[nn.Module, Inputs]:
        cfg = T.WhisperConfig(
            vocab_size=VOCAB, d_model=H, encoder_layers=LAYERS, decoder_layers=LAYERS,
            encoder_attention_heads=HEADS, decoder_attention_heads=HEADS, encoder_ffn_dim=FFN,
            decoder_ffn_dim=FFN, num_mel_bins=16, max_source_positions=16,
            max_target_positions=32, use_cache=False, pad_token_id=0, bos_token_id=1,
            eos_token_id=2, decoder_start_token_id=1, suppress_tokens=None,
            begin_suppress_tokens=None,
        )  # fmt: skip
        x = {"input_features": torch.randn(2, 16, 32), "decoder_input_ids": _ids(2, 6)}
        return T.WhisperForConditionalGeneration(cfg), x

    return {"GPT-2": gpt2, "BERT": bert, "Llama-GQA": llama, "BART": bart, "T5": t5,
            "ViT": vit, "Whisper": whisper}  # fmt: skip


class MHANet(nn.Module):
    """``Linear -> nn.MultiheadAttention (self) -> Linear`` on ``(N, L, 16)``."""

    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(16, H)
        self.attn = nn.MultiheadAttention(H, HEADS, batch_first=True)
        self.out = nn.Linear(H, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits per position."""
        h = self.inp(x)
        return self.out(h + self.attn(h, h, h, need_weights=False)[0])


class EncoderNet(nn.Module):
    """``Linear -> nn.TransformerEncoderLayer x2 -> Linear``."""

    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(16, H)
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(H, HEADS, FFN, dropout=0.0, batch_first=True)
            for _ in range(LAYERS)
        )
        self.out = nn.Linear(H, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits per position."""
        h = self.inp(x)
        for layer in self.layers:
            h = layer(h)
        return self.out(h)


class DecoderNet(nn.Module):
    """``Linear -> nn.TransformerDecoderLayer x2 (memory from another Linear) -> Linear``."""

    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(16, H)
        self.mem = nn.Linear(16, H)
        self.layers = nn.ModuleList(
            nn.TransformerDecoderLayer(H, HEADS, FFN, dropout=0.0, batch_first=True)
            for _ in range(LAYERS)
        )
        self.out = nn.Linear(H, 10)

    def forward(self, tgt: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        """Logits per target position."""
        h, m = self.inp(tgt), self.mem(memory)
        for layer in self.layers:
            h = layer(h, m)
        return self.out(h)


def _torch_models() -> dict[str, Builder]:
    return {
        "nn.MultiheadAttention": lambda: (MHANet(), torch.randn(2, 8, 16)),
        "nn.TransformerEncoderLayer": lambda: (EncoderNet(), torch.randn(2, 8, 16)),
        "nn.TransformerDecoderLayer": lambda: (
            DecoderNet(),
            (torch.randn(2, 6, 16), torch.randn(2, 8, 16)),
        ),
    }


def _main_output(model: nn.Module, x: Inputs) -> torch.Tensor:
    with torch.no_grad():
        if isinstance(x, dict):
            out = model(**x)
        elif isinstance(x, tuple):
            out = model(*x)
        else:
            out = model(x)
    if isinstance(out, torch.Tensor):
        return out
    return out.logits if hasattr(out, "logits") else out[0]


def measure(name: str, build: Builder, cfg: dict[str, Any]) -> dict[str, Any]:
    """Convert, halve every hparam, export; the row of the table."""
    torch.manual_seed(0)
    model, x = build()
    model.eval()
    t0 = time.perf_counter()
    nv.convert(model, mode=[("fastnas", cfg)], dummy_input=x)
    seconds = time.perf_counter() - t0
    space = nv.search_space(model)
    hps = space.hparams
    static = space.static
    reasons = Counter(str(r).split(";")[0] for r in static["reason"])
    full = nv.profile(model, x).flops
    nv.select(
        model,
        {n: min(hp.choices, key=lambda c: abs(c - hp.original / 2)) for n, hp in hps.items()},
    )
    kept = nv.profile(model, x).flops / full
    y = _main_output(model, x)
    diff = float((_main_output(nv.export(model), x) - y).abs().max())
    main = ", ".join(f"{r} ({k})" for r, k in reasons.most_common(2)) or "-"
    return {"model": name, "hparams": len(hps), "static": len(static), "why static": main,
            "FLOPs kept": kept, "max |diff|": diff, "convert s": seconds}  # fmt: skip


def main() -> None:
    """Print the per-family markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--tie-roles", action="store_true", help="FastNASConfig(tie_roles=True)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cfg = {**CFG, "tie_roles": True} if args.tie_roles else dict(CFG)
    builders: dict[str, Builder] = {}
    if importlib.util.find_spec("transformers") is not None:
        builders.update(_hf())
    else:
        print("transformers is not installed: Hugging Face families skipped")
    builders.update(_torch_models())
    rows = [measure(name, build, cfg) for name, build in builders.items()]
    print(f"torch {torch.__version__}, {args.threads} thread(s), tie_roles={args.tie_roles}\n")
    print("| model | hparams | static dims | why static (count) | FLOPs kept at ~50% | "
          "export max abs diff | convert s |")  # fmt: skip
    print("|---|---:|---:|---|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['model']} | {r['hparams']} | {r['static']} | {r['why static']} | "
            f"{r['FLOPs kept']:.3f} | {r['max |diff|']:.1e} | {r['convert s']:.2f} |"
        )


if __name__ == "__main__":
    main()
