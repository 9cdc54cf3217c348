"""Elmo: mixes of a biLM's layers, boundaries, statelessness, freezing."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tiny_models import tiny_bilm as shared_tiny_bilm

from elmo_pipeline.models import BiLM
from elmo_pipeline.models.elmo import Elmo, add_sentence_boundaries, remove_sentence_boundaries
from elmo_pipeline.text.chars import batch_to_char_ids

SENTENCES = [["a", "tiny", "test", "sentence", "."], ["hello"], ["three", "more", "words"]]


def tiny_bilm(seed: int = 0, dropout: float = 0.0) -> BiLM:
    """The shared tiny biLM in training mode (Elmo decides the mode it runs in)."""
    return shared_tiny_bilm(seed, dropout=dropout).train()


def test_mix_matches_hand_computation_from_the_bilm_layers():
    bilm = tiny_bilm()
    weights = [0.5, -1.0, 2.0]
    elmo = Elmo(bilm, num_output_representations=2, dropout=0.0, fixed_mix_weights=weights)
    with torch.no_grad():
        out = elmo(SENTENCES)
        full = bilm(batch_to_char_ids(SENTENCES, add_boundaries=True))  # with <S> ... </S>
    s = np.exp(weights) / np.exp(weights).sum()
    assert len(out.representations) == 2 and out.representations[0].shape == (3, 5, 16)
    for k, sentence in enumerate(SENTENCES):
        n = len(sentence)
        expected = sum(s[j] * full.activations[j][k, 1 : n + 1].numpy() for j in range(3))  # boundaries dropped
        for rep in out.representations:
            np.testing.assert_allclose(rep[k, :n].numpy(), expected, rtol=1e-5, atol=1e-6)
            assert not rep[k, n:].any()
        assert out.mask[k].tolist() == [True] * n + [False] * (5 - n)


def test_char_ids_and_token_lists_give_the_same_output():
    elmo = Elmo(tiny_bilm(), dropout=0.0).eval()
    with torch.no_grad():
        from_tokens = elmo(SENTENCES)
        from_chars = elmo(batch_to_char_ids(SENTENCES))
    assert torch.equal(from_tokens.mask, from_chars.mask)
    torch.testing.assert_close(from_tokens.representations[0], from_chars.representations[0])


def test_keep_sentence_boundaries():
    elmo = Elmo(tiny_bilm(), dropout=0.0, keep_sentence_boundaries=True)
    with torch.no_grad():
        out = elmo(SENTENCES)
    assert out.representations[0].shape == (3, 7, 16)
    assert out.mask.sum(dim=1).tolist() == [7, 3, 5]


def test_boundary_helpers_round_trip():
    chars = batch_to_char_ids(SENTENCES)  # (3, 5, 50)
    with_bounds = add_sentence_boundaries(chars)
    assert torch.equal(with_bounds, batch_to_char_ids(SENTENCES, add_boundaries=True))
    mask = (with_bounds > 0).any(-1)
    inner, inner_mask = remove_sentence_boundaries(with_bounds, mask)
    assert torch.equal(inner, chars) and torch.equal(inner_mask, (chars > 0).any(-1))


def test_a_sentence_alone_equals_itself_in_a_padded_batch_and_on_every_call():
    elmo = Elmo(tiny_bilm(dropout=0.3), num_output_representations=2, dropout=0.0)  # biLM dropout must stay off
    elmo.train()  # a frozen biLM stays in eval mode
    alone = [elmo([sentence]) for sentence in SENTENCES]
    batch = elmo(SENTENCES)
    again = elmo(list(reversed(SENTENCES)))
    for k, sentence in enumerate(SENTENCES):
        n = len(sentence)
        for r in range(2):
            single = alone[k].representations[r][0, :n]
            torch.testing.assert_close(batch.representations[r][k, :n], single, rtol=0, atol=1e-6)
            torch.testing.assert_close(again.representations[r][2 - k, :n], single, rtol=0, atol=1e-6)
    repeat = elmo([SENTENCES[0]])
    assert torch.equal(repeat.representations[0], alone[0].representations[0])


def test_frozen_by_default_only_the_mix_learns():
    bilm = tiny_bilm()
    elmo = Elmo(bilm, num_output_representations=2, l2_coefficient=0.001)
    assert not any(p.requires_grad for p in bilm.parameters())
    elmo.train()
    assert elmo.training and not bilm.training
    out = elmo(SENTENCES)
    (sum(r.sum() for r in out.representations) + elmo.penalty()).backward()
    assert all(p.grad is None for p in bilm.parameters())
    for mix in elmo.mixes:
        assert mix.weights.grad is not None and mix.gamma.grad is not None
    trainable = {name for name, p in elmo.named_parameters() if p.requires_grad}
    assert trainable == {"mixes.0.weights", "mixes.0.gamma", "mixes.1.weights", "mixes.1.gamma"}


def test_fine_tuning_on_request():
    bilm = tiny_bilm(dropout=0.1)
    elmo = Elmo(bilm, requires_grad=True).train()
    assert bilm.training
    elmo(SENTENCES).representations[0].sum().backward()
    missing = [name for name, p in bilm.named_parameters() if p.grad is None]
    assert missing == []


def test_dropout_after_the_mix_only_in_training():
    elmo = Elmo(tiny_bilm(), dropout=0.5)
    elmo.train()
    torch.manual_seed(0)
    trained = elmo(SENTENCES).representations[0]
    elmo.eval()
    evaluated = elmo(SENTENCES).representations[0]
    mask = elmo(SENTENCES).mask
    dropped = (trained == 0) & mask.unsqueeze(-1)
    assert dropped.any()
    kept = ~dropped & mask.unsqueeze(-1)
    torch.testing.assert_close(trained[kept], 2 * evaluated[kept])


def test_penalty_sums_the_mixes():
    elmo = Elmo(tiny_bilm(), num_output_representations=2, l2_coefficient=0.5)
    with torch.no_grad():
        elmo.mixes[0].weights.copy_(torch.tensor([1.0, 0.0, 0.0]))
        elmo.mixes[1].weights.copy_(torch.tensor([0.0, 2.0, 0.0]))
    assert elmo.penalty().item() == pytest.approx(0.5 * (1 + 4))
    assert Elmo(tiny_bilm(), fixed_mix_weights=[0.0, 0.0, 5.0]).penalty().item() == 0.0


def test_errors():
    elmo = Elmo(tiny_bilm())
    chars = batch_to_char_ids(SENTENCES, add_boundaries=True)
    with pytest.raises(ValueError, match="already starts with <S>"):
        elmo(chars)
    gap = batch_to_char_ids(SENTENCES)
    gap[1, 0] = 0
    gap[1, 1] = gap[0, 0]  # a padding row before a real token
    with pytest.raises(ValueError, match="left-aligned"):
        elmo(gap)
    with pytest.raises(ValueError, match="got 2 layers but the biLM has 3"):
        elmo.mix([torch.zeros(1, 2, 16)] * 2, torch.ones(1, 2, dtype=torch.bool))
