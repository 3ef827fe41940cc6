# %% [markdown]
# # 09 · A Hugging Face transformers model: heads and FFN widths per block, pruned and saved
#
# A small **Llama** (grouped-query attention: 4 query heads share 2 key/value heads) built from a
# config with random weights: nothing is downloaded. nasviz captures it with `torch.export` on
# the example input (a dict of keyword arguments) and finds, per block:
#
# * the **heads** (whole key/value heads, each removed together with its query heads),
# * the **FFN width** (gate and up projections coupled, down projection following),
# * and the residual **stream** shared by every block.
#
# A transformers config holds one `intermediate_size` and one `num_attention_heads`, so to save
# the result with `save_pretrained` we convert with `tie_roles=True`: one hparam per role across
# blocks. Then `nv.prune` to half the FLOPs with a simple score (how often the pruned model's
# next-token prediction agrees with the unpruned one on random tokens), `nv.export`, and
# `nv.save_pretrained`, which reloads with `from_pretrained` and checks the outputs before it
# writes the directory.

# %%
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
import pandas as pd
import plotly.graph_objects as go
import torch
import transformers
from IPython.display import display

import nasviz as nv

started = time.perf_counter()
torch.set_num_threads(1)
torch.manual_seed(0)
config = transformers.LlamaConfig(
    vocab_size=256, hidden_size=64, num_hidden_layers=4, num_attention_heads=4,
    num_key_value_heads=2, intermediate_size=128, max_position_embeddings=64, use_cache=False,
)  # fmt: skip
model = transformers.LlamaForCausalLM(config).eval()
x = {"input_ids": torch.randint(0, 256, (4, 32))}
with torch.no_grad():
    reference = model(**x).logits
RULES = {"nn.Linear": {"feature_divisor": 1}}

# %% [markdown]
# ## The search space, block by block
#
# Converted without tying, every block has its own heads hparam and its own FFN hparam.

# %%
per_block = transformers.LlamaForCausalLM(config).eval()
per_block.load_state_dict(model.state_dict())
nv.convert(per_block, mode=[("fastnas", RULES)], dummy_input=x)
space = nv.search_space(per_block)
rows = []
for name, hp in space.hparams.items():
    if ".layers." not in name:
        continue
    block = int(name.split(".layers.")[1].split(".")[0])
    role = "heads (KV)" if name.endswith(".heads") else "FFN width"
    rows.append({"block": block, "role": role, "original": hp.original, "choices": len(hp.choices)})
table = pd.DataFrame(rows).pivot(index="block", columns="role", values="choices")
print(sorted(n for n in space.hparams if ".layers." not in n))  # the stream
display(pd.DataFrame(rows))
fig = go.Figure(
    go.Heatmap(
        z=table.values, x=list(table.columns), y=[f"block {b}" for b in table.index],
        text=table.values, texttemplate="%{text} choices", colorscale="Blues",
    )
)  # fmt: skip
fig.update_layout(title="number of widths per block and role", height=300)
fig.show()
assert list(table.index) == [0, 1, 2, 3]
assert set(table.columns) == {"heads (KV)", "FFN width"}
assert (table["heads (KV)"] == 2).all()  # 1 or 2 KV heads (each with its 2 query heads)

# %% [markdown]
# ## Tie the roles, prune to half the FLOPs
#
# `tie_roles=True` names each tied hparam by its role: the block index becomes `*`.

# %%
nv.convert(model, mode=[("fastnas", {**RULES, "tie_roles": True})], dummy_input=x)
tied = nv.search_space(model).hparams
print(sorted(tied))
assert "model.layers.*.self_attn.heads" in tied
assert "model.layers.*.mlp.gate_proj.out_features" in tied
full = nv.profile(model, x).flops


def agreement(m):
    with torch.no_grad():
        return (m(**x).logits.argmax(-1) == reference.argmax(-1)).float().mean().item()


t = time.perf_counter()
model, state = nv.prune(
    model, mode="fastnas", constraints={"flops": "50%"}, dummy_input=x,
    config={"score_func": agreement},
)  # fmt: skip
best = state["best"]
kept = nv.profile(model, x).flops / full
print(f"searched in {time.perf_counter() - t:.1f} s: {best['config']}")
print(f"agreement {best['score']:.3f} at {kept:.1%} of the FLOPs")
assert kept <= 0.5

# %% [markdown]
# ## Export and `save_pretrained`
#
# The exported model is still a `LlamaForCausalLM`; its config carries the new widths.

# %%
small = nv.export(model)
keys = ("hidden_size", "intermediate_size", "num_attention_heads", "num_key_value_heads")
print(type(small).__name__, {k: getattr(small.config, k) for k in keys})
assert type(small) is transformers.LlamaForCausalLM
with torch.no_grad():
    assert torch.allclose(small(**x).logits, model(**x).logits, atol=1e-5)
with tempfile.TemporaryDirectory() as tmp:
    report = nv.save_pretrained(small, Path(tmp) / "llama-pruned", x)
    print(report)
    loaded = transformers.LlamaForCausalLM.from_pretrained(Path(tmp) / "llama-pruned").eval()
    with torch.no_grad():
        diff = (loaded(**x).logits - small(**x).logits).abs().max().item()
print(f"from_pretrained max abs diff {diff:.2g}; total {time.perf_counter() - started:.1f} s")
assert report.max_abs_diff <= 1e-5
assert diff <= 1e-5
assert loaded.config.intermediate_size == small.config.intermediate_size
