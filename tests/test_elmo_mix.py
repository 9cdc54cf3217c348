"""One mix: ElmoMix against a hand computation, and the finetuning system feeds its head exactly that."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from elmo_pipeline.modules.elmo_mix import ElmoMix
from elmo_pipeline.modules.heads import HeadOutput
from elmo_pipeline.systems.finetune import FinetuneSystem


def _hand_mix(layers: list[np.ndarray], w: np.ndarray, gamma: float, mask: np.ndarray) -> np.ndarray:
    """gamma * sum_j softmax(w)_j h_j, zero at padding, written out in numpy."""
    s = np.exp(w - w.max()) / np.exp(w - w.max()).sum()
    out = np.zeros_like(layers[0])
    for j, layer in enumerate(layers):
        out += s[j] * layer
    return gamma * out * mask[..., None]


def _layers_and_mask(seed: int = 0, B: int = 2, T: int = 4, D: int = 6, L: int = 3):
    g = torch.Generator().manual_seed(seed)
    layers = [torch.randn(B, T, D, generator=g) for _ in range(L)]
    mask = torch.tensor([[True] * T, [True] * (T - 2) + [False] * 2])
    return layers, mask


def test_elmo_mix_equals_the_hand_computation():
    layers, mask = _layers_and_mask()
    mix = ElmoMix(3, names=["input", "output"], dropout=0.0, l2_coefficient=0.01)
    weights = {"input": ([0.3, -1.0, 2.0], 0.7), "output": ([1.0, 0.0, -0.5], 1.9)}
    with torch.no_grad():
        for name, (w, gamma) in weights.items():
            mix[name].weights.copy_(torch.tensor(w))
            mix[name].gamma.fill_(gamma)
    out = mix(layers, mask)
    for name, (w, gamma) in weights.items():
        expected = _hand_mix([x.numpy() for x in layers], np.array(w), gamma, mask.numpy())
        np.testing.assert_allclose(out[name].detach().numpy(), expected, rtol=1e-6, atol=1e-6)
    hand_penalty = 0.01 * sum(np.sum(np.square(w)) for w, _ in weights.values())
    assert abs(float(mix.penalty().detach()) - hand_penalty) < 1e-6
    assert mix.weights()["output"]["gamma"] == np.float32(1.9).item()


class RecordingHead(nn.Module):
    """A head that keeps what the system gives it."""

    num_inputs = 1

    def __init__(self, input_dim: int, labels: list[str], output_elmo_dim: int) -> None:
        super().__init__()
        self.input_dim, self.output_elmo_dim = input_dim, output_elmo_dim
        self.scale = nn.Parameter(torch.ones(()))
        self.seen: dict[str, list[torch.Tensor] | None] = {}

    def forward(self, inputs, masks, labels=None, output_elmo=None) -> HeadOutput:
        self.seen = {"inputs": inputs, "output_elmo": output_elmo}
        logits = self.scale * inputs[0].mean(dim=1)[:, :5]  # (B, 5)
        return HeadOutput(logits, None)

    def decode(self, output: HeadOutput, masks) -> torch.Tensor:
        return output.logits.argmax(-1)


def _system(**overrides) -> FinetuneSystem:
    options = dict(
        head=RecordingHead,
        task="sentiment_sst5",
        labels=["0", "1", "2", "3", "4"],
        num_words=10,
        num_chars=10,
        elmo_num_layers=3,
        elmo_dim=6,
        elmo_places=["input", "output"],
        word_dim=4,
        char_filters=0,
    )
    return FinetuneSystem(**{**options, **overrides})


def test_finetune_feeds_its_head_the_mix_of_the_hand_computation():
    """The code that makes the results table: FinetuneSystem's ELMo input and output, by hand."""
    layers, mask = _layers_and_mask(seed=1)
    system = _system(elmo_dropout=0.5).eval()  # dropout is off in eval mode
    weights = {"input": ([0.5, 0.1, -2.0], 0.25), "output": ([-1.0, 3.0, 0.0], 1.5)}
    with torch.no_grad():
        for place, (w, gamma) in weights.items():
            system.mixes[place].weights.copy_(torch.tensor(w))
            system.mixes[place].gamma.fill_(gamma)
    words = torch.randint(2, 10, mask.shape) * mask  # (B, T)
    batch = {
        "words": [words],
        "chars": [torch.zeros(*mask.shape, 3, dtype=torch.long)],
        "masks": [mask],
        "elmo": [layers],
        "labels": torch.tensor([1, 3]),
    }
    with torch.no_grad():
        system(batch)
    seen = system.head.seen
    numpy_layers = [x.numpy() for x in layers]
    expected_input = _hand_mix(numpy_layers, np.array(weights["input"][0]), 0.25, mask.numpy())
    expected_output = _hand_mix(numpy_layers, np.array(weights["output"][0]), 1.5, mask.numpy())
    assert seen["inputs"][0].shape[-1] == 4 + 6  # word vectors, then ELMo
    np.testing.assert_allclose(seen["inputs"][0][..., 4:].numpy(), expected_input, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(seen["output_elmo"][0].numpy(), expected_output, rtol=1e-6, atol=1e-6)
    assert system.mix_weights()["input"]["gamma"] == 0.25


def test_checkpoints_keyed_by_place_name_still_load():
    """Before ElmoMix, the finetuning system's mixes were a ModuleDict: ``mixes.input.weights``."""
    mix = ElmoMix(3, names=["input", "output"], dropout=0.0)
    old = {
        "input.weights": torch.tensor([1.0, 2.0, 3.0]),
        "input.gamma": torch.tensor(0.5),
        "output.weights": torch.tensor([-1.0, 0.0, 1.0]),
        "output.gamma": torch.tensor(2.0),
    }
    mix.load_state_dict(old)
    assert torch.equal(mix["input"].weights, old["input.weights"]) and float(mix["output"].gamma) == 2.0


def test_elmo_at_the_input_is_dropped_out_once_by_the_head_not_by_the_mix():
    system = _system(elmo_dropout=0.5).train()
    layers, mask = _layers_and_mask()
    mixed = system.mixes(layers, mask)
    with torch.no_grad():
        expected = system.mixes.eval()(layers, mask)
    torch.testing.assert_close(mixed["input"], expected["input"])  # no dropout at the input: the head has its own
    assert (mixed["output"] == 0).sum() > (expected["output"] == 0).sum()  # dropout 0.5 at the output


def test_initial_gamma_per_place_and_the_mix_learning_rate():
    system = _system(elmo_gamma={"output": 0.25}, elmo_lr=0.05, lr=1e-3, weight_decay=0.01)
    assert system.mix_weights()["input"]["gamma"] == 1.0 and system.mix_weights()["output"]["gamma"] == 0.25
    assert system.initial_mix_weights["output"]["gamma"] == 0.25
    optimizer = system.configure_optimizers()
    rest, mix = optimizer.param_groups
    assert mix["lr"] == 0.05 and mix["weight_decay"] == 0.0 and rest["lr"] == 1e-3 and rest["weight_decay"] == 0.01
    assert {id(p) for p in mix["params"]} == {id(p) for p in system.mixes.parameters()}
    assert len(rest["params"]) + len(mix["params"]) == len([p for p in system.parameters() if p.requires_grad])


def test_pretrained_word_vectors_get_no_weight_decay():
    system = _system(word_vectors="glove.txt", weight_decay=0.01, elmo_places=None, elmo_num_layers=0)
    groups = system.configure_optimizers().param_groups
    assert [g["weight_decay"] for g in groups] == [0.01, 0.0]
    assert groups[1]["params"] == [system.embedder.word_embedding.weight]
