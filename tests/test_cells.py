"""Recurrent cells against their equations written out step by step, their parameter counts, and the
tiny biLM built with each of them (shapes, causality, every parameter learns, the loss falls)."""

from __future__ import annotations

import dataclasses
import io
from contextlib import redirect_stdout
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from tiny_models import lm_batch
from torch import nn

from elmo_pipeline.commands.pretrain import main as pretrain_main
from elmo_pipeline.models import BiLM, BiLMConfig
from elmo_pipeline.modules.cells import (
    CELLS,
    CoupledLSTMLayer,
    GRULayer,
    LayerNormLSTMLayer,
    LSTMLayer,
    PeepholeLSTMLayer,
    make_cell,
)
from elmo_pipeline.modules.lstm import LSTMPLayer
from elmo_pipeline.text import Vocabulary, batch_to_char_ids

X, H, B, T = 5, 7, 3, 6


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def params(layer: nn.Module) -> dict[str, np.ndarray]:
    return {name: p.detach().double().numpy() for name, p in layer.named_parameters()}


def randomised(layer: nn.Module) -> nn.Module:
    with torch.no_grad():  # larger than the init, so that gates saturate differently per unit
        for p in layer.parameters():
            p.normal_(0.0, 0.7)
    return layer


def gate(p: dict[str, np.ndarray], k: int) -> tuple[np.ndarray, np.ndarray]:
    """W_k acting on [h, x] (rows k*H..(k+1)*H of weight_hh and weight_ih side by side) and b_k."""
    rows = slice(k * H, (k + 1) * H)
    return np.concatenate([p["weight_hh"][rows], p["weight_ih"][rows]], axis=1), p["bias"][rows]


def layer_norm(a: np.ndarray, gain: np.ndarray, bias: np.ndarray | float = 0.0) -> np.ndarray:
    """Ba et al.: (g / sigma) * (a - mu) + b, mu and sigma over the H units of a (B, H)."""
    mu = a.mean(axis=1, keepdims=True)
    sigma = np.sqrt(((a - mu) ** 2).mean(axis=1, keepdims=True) + 1e-5)
    return gain / sigma * (a - mu) + bias


# ----------------------------------------------------------------------------- references, float64


def lstm_reference(x: np.ndarray, p: dict[str, np.ndarray]) -> np.ndarray:
    (W_i, b_i), (W_f, b_f), (W_C, b_C), (W_o, b_o) = (gate(p, k) for k in range(4))  # order i, f, g, o
    h, C = np.zeros((B, H)), np.zeros((B, H))
    out = []
    for t in range(T):
        hx = np.concatenate([h, x[:, t]], axis=1)  # [h, x]
        f = sigmoid(hx @ W_f.T + b_f)
        i = sigmoid(hx @ W_i.T + b_i)
        o = sigmoid(hx @ W_o.T + b_o)
        C_tilde = np.tanh(hx @ W_C.T + b_C)
        C = f * C + i * C_tilde
        h = o * np.tanh(C)
        out.append(h)
    return np.stack(out, axis=1)


def coupled_reference(x: np.ndarray, p: dict[str, np.ndarray]) -> np.ndarray:
    (W_f, b_f), (W_C, b_C), (W_o, b_o) = (gate(p, k) for k in range(3))  # order f, g, o
    h, C = np.zeros((B, H)), np.zeros((B, H))
    out = []
    for t in range(T):
        hx = np.concatenate([h, x[:, t]], axis=1)
        f = sigmoid(hx @ W_f.T + b_f)
        o = sigmoid(hx @ W_o.T + b_o)
        C_tilde = np.tanh(hx @ W_C.T + b_C)
        C = f * C + (1 - f) * C_tilde
        h = o * np.tanh(C)
        out.append(h)
    return np.stack(out, axis=1)


def peephole_reference(x: np.ndarray, p: dict[str, np.ndarray]) -> np.ndarray:
    (W_i, b_i), (W_f, b_f), (W_C, b_C), (W_o, b_o) = (gate(p, k) for k in range(4))
    h, C = np.zeros((B, H)), np.zeros((B, H))
    out = []
    for t in range(T):
        hx = np.concatenate([h, x[:, t]], axis=1)
        C_prev = C
        f = sigmoid(hx @ W_f.T + p["peep_f"] * C_prev + b_f)
        i = sigmoid(hx @ W_i.T + p["peep_i"] * C_prev + b_i)
        C = f * C_prev + i * np.tanh(hx @ W_C.T + b_C)
        o = sigmoid(hx @ W_o.T + p["peep_o"] * C + b_o)  # the new C
        h = o * np.tanh(C)
        out.append(h)
    return np.stack(out, axis=1)


def gru_reference(x: np.ndarray, p: dict[str, np.ndarray]) -> np.ndarray:
    (W_r, b_r), (W_z, b_z), _ = (gate(p, k) for k in range(3))  # order r, z, n
    W_in, W_hn, b_n = p["weight_ih"][2 * H :], p["weight_hh"][2 * H :], p["bias"][2 * H :]
    h = np.zeros((B, H))
    out = []
    for t in range(T):
        hx = np.concatenate([h, x[:, t]], axis=1)
        r = sigmoid(hx @ W_r.T + b_r)
        z = sigmoid(hx @ W_z.T + b_z)
        n = np.tanh(x[:, t] @ W_in.T + b_n + r * (h @ W_hn.T + p["bias_hn"]))
        h = (1 - z) * n + z * h
        out.append(h)
    return np.stack(out, axis=1)


def layernorm_lstm_reference(x: np.ndarray, p: dict[str, np.ndarray]) -> np.ndarray:
    h, C = np.zeros((B, H)), np.zeros((B, H))
    out = []
    for t in range(T):
        pre = []
        for k in range(4):  # each gate normalised over its own H units, input and recurrent parts apart
            rows = slice(k * H, (k + 1) * H)
            a_h = layer_norm(h @ p["weight_hh"][rows].T, p["gain_hh"][rows])
            a_x = layer_norm(x[:, t] @ p["weight_ih"][rows].T, p["gain_ih"][rows])
            pre.append(a_h + a_x + p["bias"][rows])
        i, f, C_tilde, o = sigmoid(pre[0]), sigmoid(pre[1]), np.tanh(pre[2]), sigmoid(pre[3])
        C = f * C + i * C_tilde
        h = o * np.tanh(layer_norm(C, p["gain_cell"], p["bias_cell"]))
        out.append(h)
    return np.stack(out, axis=1)


REFERENCES = {
    LSTMLayer: lstm_reference,
    CoupledLSTMLayer: coupled_reference,
    PeepholeLSTMLayer: peephole_reference,
    GRULayer: gru_reference,
    LayerNormLSTMLayer: layernorm_lstm_reference,
}


@pytest.mark.parametrize("cls", list(REFERENCES), ids=lambda c: c.__name__)
def test_cell_equals_its_equations(cls) -> None:
    layer = randomised(cls(X, H))
    x = torch.randn(B, T, X) * 1.5
    expected = REFERENCES[cls](x.double().numpy(), params(layer))
    np.testing.assert_allclose(layer(x).detach().double().numpy(), expected, atol=1e-5, rtol=1e-4)
    # and in float64 end to end, to rule out a difference hidden by float32 tolerance
    np.testing.assert_allclose(layer.double()(x.double()).detach().numpy(), expected, atol=1e-10)


@pytest.mark.parametrize(("cls", "torch_cls"), [(LSTMLayer, nn.LSTM), (GRULayer, nn.GRU)])
def test_fused_cells_equal_torch_modules(cls, torch_cls) -> None:
    """The fused cells are torch.nn.LSTM / GRU with the redundant biases folded into one."""
    layer = randomised(cls(X, H))
    reference = torch_cls(X, H, batch_first=True)
    with torch.no_grad():
        reference.weight_ih_l0.copy_(layer.weight_ih)
        reference.weight_hh_l0.copy_(layer.weight_hh)
        reference.bias_ih_l0.copy_(layer.bias)
        reference.bias_hh_l0.zero_()
        if cls is GRULayer:
            reference.bias_hh_l0[2 * H :] = layer.bias_hn
    x = torch.randn(B, T, X)
    torch.testing.assert_close(layer(x), reference(x)[0])


PARAMETER_FORMULAS = {  # X inputs, H cell/state, P projection
    "lstmp": lambda X, H, P: 4 * H * (P + X) + 4 * H + P * H,
    "lstm": lambda X, H, P: 4 * P * (P + X) + 4 * P,  # (H + X) * H * 4 plus biases, H = P
    "coupled": lambda X, H, P: 3 * P * (P + X) + 3 * P,
    "peephole": lambda X, H, P: 4 * P * (P + X) + 4 * P + 3 * P,
    "gru": lambda X, H, P: 3 * P * (P + X) + 3 * P + P,
    "layernorm_lstm": lambda X, H, P: 4 * P * (P + X) + 4 * P + 8 * P + 2 * P,
}


@pytest.mark.parametrize("name", list(CELLS))
def test_parameter_count_matches_formula(name: str) -> None:
    assert set(PARAMETER_FORMULAS) == set(CELLS)
    layer = make_cell(name, input_size=5, output_size=6, cell_size=11)
    assert isinstance(layer, CELLS[name])
    assert sum(p.numel() for p in layer.parameters()) == PARAMETER_FORMULAS[name](5, 11, 6)
    x = torch.randn(2, 4, 5)
    assert layer(x).shape == (2, 4, 6)  # (B, T, X) -> (B, T, P)


def test_unknown_cell_names_the_option() -> None:
    with pytest.raises(ValueError, match="--model.bilm.cell"):
        BiLMConfig(cell="rnn")
    with pytest.raises(ValueError, match="--model.bilm.cell"):
        make_cell("rnn", 4, 4, 4)


def test_default_cell_is_the_unchanged_lstmp(tiny_config: BiLMConfig) -> None:
    assert tiny_config.cell == "lstmp"
    data = tiny_config.to_dict()
    del data["cell"]  # export folders written before the option existed
    bilm = BiLM(BiLMConfig.from_dict(data))
    assert all(type(layer) is LSTMPLayer for layer in [*bilm.forward_layers, *bilm.backward_layers])
    names = {k for k in bilm.state_dict() if k.startswith("forward_layers.0.")}
    suffixes = {"weight_ih", "weight_hh", "bias", "weight_hr"}
    assert names == {f"forward_layers.0.{s}" for s in suffixes}


# ----------------------------------------------------------------------------- the tiny biLM with each cell

SENTENCES = ["the cat sat on the mat .".split(), "a dog ran far away from the big red barn".split()]


@pytest.mark.parametrize("cell", list(CELLS))
def test_tiny_bilm_with_cell_is_causal_and_learns(cell: str, tiny_config: BiLMConfig) -> None:
    vocab = Vocabulary.build(SENTENCES)
    chars, fwd, bwd = lm_batch(SENTENCES, vocab)
    config = dataclasses.replace(tiny_config, cell=cell, vocab_size=len(vocab), num_samples=0)
    bilm = BiLM(config)
    P = config.projection_dim

    # causality: changing the last real word of sentence 0 leaves the forward states before it alone
    bilm.eval()
    changed = chars.clone()
    changed[0, 7] = batch_to_char_ids([["rug"]])[0, 0]  # "mat" -> "rug"
    a, b = bilm(chars).activations[-1], bilm(changed).activations[-1]  # (B, T, 2P)
    torch.testing.assert_close(a[0, :7, :P], b[0, :7, :P])
    assert not torch.allclose(a[0, 7, :P], b[0, 7, :P])
    torch.testing.assert_close(a[0, 8:, P:], b[0, 8:, P:])  # backward: after it, untouched
    assert a.shape == (2, 12, 2 * P)

    bilm.train()
    opt = torch.optim.Adam(bilm.parameters(), lr=0.01)
    losses = []
    for step in range(40):
        loss = bilm(chars, fwd, bwd).loss
        opt.zero_grad()
        loss.backward()
        if step == 0:
            layers = [*bilm.forward_layers, *bilm.backward_layers]
            assert all(p.grad is not None and p.grad.abs().sum() > 0 for m in layers for p in m.parameters())
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses


def test_pretrain_cli_accepts_the_cell_option() -> None:
    tiny = Path(__file__).parents[1] / "configs" / "pretrain" / "tiny.yaml"
    out = io.StringIO()
    with redirect_stdout(out), pytest.raises(SystemExit):
        pretrain_main(["fit", "--config", str(tiny), "--model.bilm.cell=layernorm_lstm", "--print_config"])
    assert yaml.safe_load(out.getvalue())["model"]["bilm"]["cell"] == "layernorm_lstm"
