"""The fusion LM scores only the decoder's target words: the same log-probabilities as the whole softmax."""

from __future__ import annotations

import pytest
import torch
from tiny_models import tiny_bilm

from elmo_pipeline.models.target_lm import TargetLM
from elmo_pipeline.text.vocab import Vocabulary


@pytest.mark.parametrize("softmax", ["adaptive", "full"])
def test_target_scores_are_the_renormalised_full_softmax(softmax):
    lm_words = [f"w{i}" for i in range(40)]
    lm_vocab = Vocabulary(["<S>", "</S>", "<UNK>", *lm_words])  # 43 ids
    extra = {"adaptive_cutoffs": [8, 20], "adaptive_div_value": 2.0} if softmax == "adaptive" else {}
    bilm = tiny_bilm(vocab_size=len(lm_vocab), softmax=softmax, num_samples=0, **extra).double()
    # words of the head, of both tails, two outside the LM (they take <UNK>'s score), in no particular order
    targets = ["<S>", "</S>", "<UNK>", "w30", "w2", "w15", "zebra", "w39", "w7", "quagga", "w21", "w9"]
    lm = TargetLM(bilm, lm_vocab, targets)
    top = torch.randn(3, 5, bilm.config.projection_dim, dtype=torch.float64)  # (B, T, P)
    full = bilm.softmax.log_probs(top)  # (B, T, 43): every word of the LM
    expected = torch.log_softmax(full[..., lm.lm_ids], dim=-1)  # (B, T, V)
    torch.testing.assert_close(lm._log_probs(top), expected, rtol=0, atol=1e-12)
    assert lm.oov == 2
