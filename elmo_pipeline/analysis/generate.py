"""`elmo-pipeline generate`: sample text from the forward language model of a pretrained biLM.

The forward LM gives ``p(w_{k+1} | <S>, w_1 .. w_k)`` as the softmax over the vocabulary of its top
layer at position k. Sampling a word and appending it grows the prefix; since the biLM is stateless
the whole prefix is run again at every step (quadratic in the length, negligible for the short
texts this is for, and it needs no second, stateful code path through the model). ``<S>`` and
``<UNK>`` are never sampled; ``</S>`` ends the text.

    elmo-pipeline generate --bilm runs/pretrain/tiny_shared_lm/export --prompt "The film is" \\
        --max-tokens 30 --temperature 0.8 --top-k 40 --seed 0
"""

from __future__ import annotations

import argparse
import math

import torch

from elmo_pipeline.analysis.common import load_for_inference, require_at_least_one
from elmo_pipeline.errors import InputError
from elmo_pipeline.models.bilm import BiLM
from elmo_pipeline.text import BOS_TOKEN, EOS_TOKEN, UNK_TOKEN, Vocabulary, batch_to_char_ids, detokenize, tokenize


@torch.no_grad()
def next_word_log_probs(bilm: BiLM, prefix: list[str]) -> torch.Tensor:
    """Log-probabilities (V,) of the word after ``prefix`` (which starts with ``<S>``) under the forward LM."""
    if bilm.softmax is None:
        raise ValueError("generate: this biLM has no softmax (vocab_size 0); it cannot predict words")
    chars = batch_to_char_ids([prefix])  # (1, T, C)
    top = bilm(chars).activations[-1]  # (1, T, 2P): [forward; backward] of the top layer
    return bilm.softmax.log_probs(top[0, -1, : bilm.config.projection_dim])  # (V,)


def sample_word(
    log_probs: torch.Tensor, banned: list[int], temperature: float, top_k: int, generator: torch.Generator
) -> int:
    """Draw one id from ``softmax(log_probs / temperature)``, restricted to the top k (0: all), never a banned id."""
    logits = log_probs.to(torch.float64, copy=True)  # (V,); float64 as the temperature is: 1e-300 is not 0
    logits[banned] = float("-inf")
    # the best allowed word at 0 before dividing: a tiny temperature sends the others to -inf, never all to NaN
    logits = (logits - logits.max()) / temperature  # (V,)
    if 0 < top_k < logits.numel():
        kth = torch.topk(logits, top_k).values[-1]
        logits[logits < kth] = float("-inf")
    return int(torch.multinomial(torch.softmax(logits, dim=-1), 1, generator=generator))


def generate(
    bilm: BiLM,
    vocab: Vocabulary,
    prompt: list[str],
    max_tokens: int = 30,
    temperature: float = 1.0,
    top_k: int = 0,
    seed: int = 0,
) -> list[str]:
    """Continue ``prompt`` (tokens) with at most ``max_tokens`` sampled words; the same seed gives the same words.

    Args:
        bilm: a biLM with a softmax, in eval mode.
        vocab: its softmax vocabulary.
        prompt: tokens to start from (``<S>`` is put before them).
        max_tokens: most words to add; sampling ``</S>`` stops earlier (it is not returned).
        temperature: > 0; below 1 sharpens the distribution, above 1 flattens it.
        top_k: sample among the k most probable words only (0: all; 1: greedy).
        seed: seed of the sampler.

    Returns:
        The sampled words, without the prompt.
    """
    if not (math.isfinite(temperature) and temperature > 0):
        raise ValueError(
            f"generate: temperature must be a finite number > 0, got {temperature} (--temperature; --top-k 1 is greedy)"
        )
    if top_k < 0:
        raise ValueError(f"generate: top-k must be >= 0, got {top_k} (--top-k)")
    if bilm.softmax is None or bilm.softmax.vocab_size != len(vocab):
        raise ValueError("generate: the biLM's softmax does not match the vocabulary; load both from one export")
    generator = torch.Generator().manual_seed(seed)
    banned = [vocab.id(BOS_TOKEN), vocab.id(UNK_TOKEN)]
    prefix, out = [BOS_TOKEN, *prompt], []
    for _ in range(max_tokens):
        word = vocab.words[sample_word(next_word_log_probs(bilm, prefix), banned, temperature, top_k, generator)]
        if word == EOS_TOKEN:
            break
        prefix.append(word)
        out.append(word)
    return out


def run(args: argparse.Namespace) -> int:
    """Run ``elmo-pipeline generate`` with its parsed options (``commands/generate.py``)."""
    if not (math.isfinite(args.temperature) and args.temperature > 0):
        raise InputError(f"--temperature must be a finite number above 0, got {args.temperature}")
    require_at_least_one(args, "max_tokens", "num_samples")
    if args.top_k < 0:
        raise InputError(f"--top-k must be 0 (all words) or more, got {args.top_k}")
    bilm, vocab = load_for_inference(args.bilm, need_softmax=True)
    prompt = tokenize(args.prompt)
    for n in range(args.num_samples):
        words = generate(bilm, vocab, prompt, args.max_tokens, args.temperature, args.top_k, args.seed + n)
        print(detokenize([*prompt, *words]))
    return 0
