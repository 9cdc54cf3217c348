"""Sampling from the forward LM: reproducible by seed, greedy at top-k 1, never <UNK> or <S>, stops at </S>."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from elmo_pipeline.analysis.generate import detokenize, generate, next_word_log_probs
from elmo_pipeline.commands.generate import main
from elmo_pipeline.models import BiLM, BiLMConfig
from elmo_pipeline.models.export_folder import save_export
from elmo_pipeline.text import Vocabulary

WORDS = "the a cat dog sat ran on under mat barn red big . , and".split()


@pytest.fixture
def model(tiny_config: BiLMConfig) -> tuple[BiLM, Vocabulary]:
    vocab = Vocabulary.build([WORDS])
    bilm = BiLM(dataclasses.replace(tiny_config, vocab_size=len(vocab))).eval()
    with torch.no_grad():  # <UNK> and <S> the most probable words by far: they must still never come out
        bilm.softmax.bias[vocab.id("<UNK>")] = 8.0
        bilm.softmax.bias[vocab.id("<S>")] = 8.0
        bilm.softmax.bias[vocab.id("</S>")] = -8.0  # rare, so that texts run to max_tokens
    return bilm, vocab


def test_same_seed_same_text_other_seed_other_text(model) -> None:
    bilm, vocab = model
    first = generate(bilm, vocab, ["the"], max_tokens=15, seed=3)
    assert first == generate(bilm, vocab, ["the"], max_tokens=15, seed=3)
    assert len(first) == 15
    assert first != generate(bilm, vocab, ["the"], max_tokens=15, seed=4)


def test_never_samples_unk_or_bos(model) -> None:
    bilm, vocab = model
    words = [w for seed in range(5) for w in generate(bilm, vocab, [], max_tokens=10, temperature=2.0, seed=seed)]
    assert words and "<UNK>" not in words and "<S>" not in words


def test_top_k_one_is_greedy(model) -> None:
    bilm, vocab = model
    greedy = generate(bilm, vocab, ["a"], max_tokens=6, top_k=1, seed=0)
    assert greedy == generate(bilm, vocab, ["a"], max_tokens=6, top_k=1, seed=99)  # seed does not matter
    prefix = ["<S>", "a"]
    for word in greedy:  # each word is the argmax among the allowed ones
        log_probs = next_word_log_probs(bilm, prefix)
        log_probs[[vocab.id("<S>"), vocab.id("<UNK>")]] = float("-inf")
        assert word == vocab.words[int(log_probs.argmax())]
        prefix.append(word)


def test_stops_at_end_of_sentence(model) -> None:
    bilm, vocab = model
    with torch.no_grad():
        bilm.softmax.bias[vocab.id("</S>")] = 50.0
    assert generate(bilm, vocab, ["the", "cat"], max_tokens=10, seed=0) == []


def test_bad_options_name_the_flag(model) -> None:
    bilm, vocab = model
    with pytest.raises(ValueError, match="--temperature"):
        generate(bilm, vocab, [], temperature=0.0)
    with pytest.raises(ValueError, match="--top-k"):
        generate(bilm, vocab, [], top_k=-1)


def test_detokenize() -> None:
    assert detokenize("He said ( quietly ) : I do n't know , it 's $ 5 .".split()) == (
        "He said (quietly): I don't know, it's $5."
    )


def test_cli_is_reproducible(model, tmp_path, capsys) -> None:
    bilm, vocab = model
    save_export(tmp_path / "export", bilm, vocab)
    args = ["--bilm", str(tmp_path / "export"), "--prompt", "The cat", "--max-tokens", "8", "--seed", "1"]
    assert main([*args, "--top-k", "5", "--temperature", "0.7"]) == 0
    first = capsys.readouterr().out
    assert main([*args, "--top-k", "5", "--temperature", "0.7"]) == 0
    assert capsys.readouterr().out == first and first.startswith("The cat")
