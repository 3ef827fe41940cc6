"""transformers' Conv1D as a declared layer family: matched without nasviz importing
transformers, sliced along its (in, out) weight, exported to the same transformers class.
"""

from __future__ import annotations

import copy
import subprocess
import sys
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import nasviz as nv
from nasviz.config import LAYER_TYPES, layer_config_class
from nasviz.dynamic import DynamicHFConv1D, dynamic_class_for
from nasviz.dynamic.family import LayerSpec
from nasviz.hparam import Hparam
from nasviz.tracing.rules import layer_spec

transformers = pytest.importorskip("transformers", reason="install nasviz[hf]")
Conv1D = transformers.pytorch_utils.Conv1D
NX, NF = 6, 10
SMALL: dict[str, Any] = {k: {"*": {LAYER_TYPES[k].divisor_field: 4}} for k in LAYER_TYPES}


def test_nasviz_does_not_import_transformers() -> None:
    code = "import sys, nasviz; print('transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_declared_family_is_matched_and_has_a_rule() -> None:
    fc = Conv1D(NF, NX)
    assert dynamic_class_for(fc) is DynamicHFConv1D
    assert layer_spec(fc) == LayerSpec("linear", "nx", "nf", -1)
    assert layer_config_class("transformers.Conv1D")().model_dump() == (
        layer_config_class("nn.Linear")().model_dump()
    )
    assert "transformers.Conv1D" in nv.FastNASConfig.layer_types()


def test_full_size_is_the_plain_layer() -> None:
    torch.manual_seed(0)
    ref = Conv1D(NF, NX)
    dyn = DynamicHFConv1D.convert(copy.deepcopy(ref))
    assert isinstance(dyn, Conv1D) and dyn.nf == NF and dyn.nx == NX
    assert repr(dyn) == f"DynamicConv1D(nf={NF}, nx={NX})"
    x = torch.randn(2, 3, NX)
    torch.testing.assert_close(dyn(x), ref(x))
    assert list(dyn.state_dict()) == list(ref.state_dict())


@settings(max_examples=40, deadline=None)
@given(
    nf=st.integers(1, NF),
    nx=st.integers(1, NX),
    out_order=st.permutations(list(range(NF))),
    in_order=st.permutations(list(range(NX))),
    lead=st.lists(st.integers(1, 3), min_size=1, max_size=3),
)
def test_dynamic_equals_export_for_random_widths(
    nf: int, nx: int, out_order: list[int], in_order: list[int], lead: list[int]
) -> None:
    torch.manual_seed(1)
    ref = Conv1D(NF, NX)
    dyn = DynamicHFConv1D.convert(copy.deepcopy(ref))
    hp_out, hp_in = Hparam(range(1, NF + 1)), Hparam(range(1, NX + 1))
    dyn.set_dim("nf", hp_out)
    dyn.set_dim("nx", hp_in)
    hp_out.enforce_order(out_order)
    hp_in.enforce_order(in_order)
    hp_out.active, hp_in.active = nf, nx
    x = torch.randn(*lead, nx)
    plain = dyn.export()
    assert type(plain) is Conv1D and (plain.nf, plain.nx) == (nf, nx)
    assert plain.weight.shape == (nx, nf)
    torch.testing.assert_close(plain(x), dyn(x))
    # ... and both equal the original layer on the kept rows/columns of its weight
    rows, cols = torch.tensor(in_order[:nx]), torch.tensor(out_order[:nf])
    expected = x @ ref.weight.detach()[rows][:, cols] + ref.bias.detach()[cols]
    torch.testing.assert_close(dyn(x), expected)


def _gpt2() -> Any:
    cfg = transformers.GPT2Config(
        n_layer=2, n_embd=32, n_head=4, n_positions=16, vocab_size=64, n_inner=64,
        bos_token_id=0, eos_token_id=0, use_cache=False,
    )  # fmt: skip
    torch.manual_seed(0)
    return transformers.GPT2Model(cfg).eval()


def test_gpt2_mlp_width_becomes_prunable() -> None:
    """A GPT-2 block's MLP (c_fc -> gelu -> c_proj, all Conv1D) converts; the hidden width of
    c_fc/c_proj is one hparam, and a pruned subnet exports to Conv1D layers, same outputs.
    """
    mlp = _gpt2().h[0].mlp
    h = torch.randn(2, 8, 32)
    ref = mlp(h)
    mlp = nv.convert(mlp, mode=[("fastnas", nv.FastNASConfig(**SMALL))], dummy_input=h)
    space = nv.search_space(mlp)
    assert list(space.hparams) == ["c_fc.nf"]
    assert space.hparams["c_fc.nf"].choices == tuple(range(4, 65, 4))
    torch.testing.assert_close(mlp(h), ref)  # converted and channel-sorted: same function
    nv.select(mlp, {"c_fc.nf": 32})
    assert (mlp.c_fc.nf, mlp.c_proj.nx) == (32, 32)
    y = mlp(h)
    small = nv.export(mlp)
    assert type(small.c_fc) is Conv1D and small.c_fc.weight.shape == (32, 32)
    assert type(small.c_proj) is Conv1D and small.c_proj.weight.shape == (32, 32)
    torch.testing.assert_close(small(h), y)


def test_gpt2_model_mlp_widths_become_prunable() -> None:
    model = _gpt2()
    ids = torch.randint(0, 64, (2, 8))
    model = nv.convert(model, mode=[("fastnas", nv.FastNASConfig(**SMALL))], dummy_input=ids)
    hparams = nv.search_space(model).hparams
    assert {"h.0.mlp.c_fc.nf", "h.1.mlp.c_fc.nf"} <= set(hparams)
