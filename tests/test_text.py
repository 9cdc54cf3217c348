"""Text layer: ELMo character ids (PAPER.md, "Token layer"), the vocabulary file and the tokenizer."""

from __future__ import annotations

from collections import Counter

import pytest
import torch

from elmo_pipeline.text import (
    MAX_CHARS,
    NUM_CHARS,
    Vocabulary,
    batch_to_char_ids,
    is_truncated,
    split_sentences,
    tokenize,
    tokenize_wikitext,
    word_char_ids,
)

# Raw ids from PAPER.md, written out here rather than imported so that the test is independent.
BOS, EOS, BOW, EOW, PAD = 256, 257, 258, 259, 260


def shifted_row(raw: list[int]) -> list[int]:
    """A raw id row padded with 260 to 50 entries, then shifted by +1."""
    return [i + 1 for i in raw + [PAD] * (50 - len(raw))]


# ----------------------------------------------------------------------------- character ids


def test_char_ids_of_a_word_by_hand() -> None:
    # "ab" = bytes 97, 98 -> [258, 97, 98, 259, 260 x 46] -> +1
    expected = [259, 98, 99, 260] + [261] * 46
    assert list(word_char_ids("ab")) == expected
    assert list(word_char_ids("ab")) == shifted_row([BOW, ord("a"), ord("b"), EOW])


def test_char_ids_of_sentence_markers_by_hand() -> None:
    assert list(word_char_ids("<S>")) == [259, 257, 260] + [261] * 47
    assert list(word_char_ids("</S>")) == [259, 258, 260] + [261] * 47
    # the markers are not spelled out as the bytes of "<S>"
    assert list(word_char_ids("<S>")) != shifted_row([BOW, *b"<S>", EOW])


def test_char_ids_constants_match_paper() -> None:
    assert MAX_CHARS == 50
    assert NUM_CHARS == 262  # 261 raw ids + the zero "no token" row


@pytest.mark.parametrize("token", ["a", "ab", "hello", "<UNK>", "3,000.50", "é", "x" * 48, "x" * 49, "<S>", "</S>"])
def test_every_row_has_50_ids_in_range(token: str) -> None:
    row = word_char_ids(token)
    assert len(row) == 50
    assert min(row) >= 1  # 0 is reserved for "no token"
    assert max(row) <= 261


def test_multibyte_utf8_is_counted_in_bytes() -> None:
    # "é" is two bytes, C3 A9; "€" is three, E2 82 AC
    assert list(word_char_ids("é")) == shifted_row([BOW, 0xC3, 0xA9, EOW])
    assert list(word_char_ids("a€")) == shifted_row([BOW, 0x61, 0xE2, 0x82, 0xAC, EOW])
    assert not is_truncated("é" * 24)  # 48 bytes: fits exactly
    assert is_truncated("é" * 25)  # 25 characters, but 50 bytes
    assert list(word_char_ids("é" * 24)) == shifted_row([BOW, *([0xC3, 0xA9] * 24), EOW])


def test_long_token_is_truncated_to_48_bytes() -> None:
    token = "x" * 10_000
    row = word_char_ids(token)
    assert list(row) == [259] + [ord("x") + 1] * 48 + [260]
    assert is_truncated(token)
    assert not is_truncated("x" * 48)
    assert is_truncated("x" * 49)
    assert not is_truncated("<S>")
    # a 3-byte character cut in the middle: the first 48 bytes are kept as they are
    euro = "€" * 17  # 51 bytes
    assert list(word_char_ids(euro)) == [259] + [b + 1 for b in euro.encode("utf-8")[:48]] + [260]


def test_empty_token_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="empty token"):
        word_char_ids("")


def test_batch_to_char_ids_pads_with_zero_rows() -> None:
    out = batch_to_char_ids([["a", "bc", "d"], ["e"], []])
    assert out.shape == (3, 3, 50)
    assert out.dtype == torch.long
    assert out[0, 1].tolist() == list(word_char_ids("bc"))
    assert out[1, 0].tolist() == list(word_char_ids("e"))
    assert torch.all(out[1, 1:] == 0)
    assert torch.all(out[2] == 0)
    assert torch.all((out[0] > 0).any(dim=-1))  # every real token has a nonzero row


def test_batch_to_char_ids_with_boundaries() -> None:
    out = batch_to_char_ids([["a", "b"], ["c"]], add_boundaries=True)
    assert out.shape == (2, 4, 50)
    assert out[0, 0].tolist() == list(word_char_ids("<S>"))
    assert out[0, 3].tolist() == list(word_char_ids("</S>"))
    assert out[1].tolist()[:3] == [list(word_char_ids(t)) for t in ("<S>", "c", "</S>")]
    assert torch.all(out[1, 3] == 0)


# ----------------------------------------------------------------------------- vocabulary


def test_vocabulary_order_specials_then_frequency_then_alphabet() -> None:
    counts = Counter({"b": 3, "a": 3, "c": 5, "d": 1, "<S>": 100, "<UNK>": 7})
    vocab = Vocabulary.from_counts(counts)
    assert vocab.words == ["<S>", "</S>", "<UNK>", "c", "a", "b", "d"]
    assert (vocab.bos_id, vocab.eos_id, vocab.unk_id) == (0, 1, 2)
    assert vocab.id("a") == 4
    assert vocab.id("never-seen") == vocab.unk_id
    assert vocab.ids(["c", "zzz", "d"]) == [3, 2, 6]
    assert "c" in vocab and "zzz" not in vocab


def test_vocabulary_max_size_and_min_count() -> None:
    counts = Counter({"b": 3, "a": 3, "c": 5, "d": 1})
    assert Vocabulary.from_counts(counts, max_size=5).words == ["<S>", "</S>", "<UNK>", "c", "a"]
    assert Vocabulary.from_counts(counts, min_count=3).words == ["<S>", "</S>", "<UNK>", "c", "a", "b"]
    assert len(Vocabulary.from_counts(counts, max_size=3)) == 3
    with pytest.raises(ValueError, match="max_size"):
        Vocabulary.from_counts(counts, max_size=2)


def test_vocabulary_build_counts_sentences() -> None:
    vocab = Vocabulary.build([["the", "cat"], ["the", "dog", "the"], ["a", "cat"]])
    assert vocab.words == ["<S>", "</S>", "<UNK>", "the", "cat", "a", "dog"]


def test_vocabulary_save_load_round_trip(tmp_path) -> None:
    vocab = Vocabulary.from_counts(Counter({"b": 3, "a": 3, "c": 5, "é": 2, "naïve": 2}))
    path = tmp_path / "sub" / "vocab.txt"
    vocab.save(path)
    assert path.read_bytes() == "<S>\n</S>\n<UNK>\nc\na\nb\nnaïve\né\n".encode()
    loaded = Vocabulary.load(path)
    assert loaded.words == vocab.words
    assert loaded.id("naïve") == vocab.id("naïve") == 6


def test_vocabulary_load_moves_specials_to_front(tmp_path) -> None:
    path = tmp_path / "vocab.txt"
    path.write_text("the\n<S>\ncat\n</S>\n", encoding="utf-8")
    assert Vocabulary.load(path).words == ["<S>", "</S>", "<UNK>", "the", "cat"]


def test_vocabulary_non_utf8_file_names_file_and_line(tmp_path) -> None:
    path = tmp_path / "latin1.txt"
    path.write_bytes(b"<S>\n</S>\n<UNK>\nok\ncaf\xe9\n")
    with pytest.raises(ValueError, match=r"latin1\.txt:5:.*UTF-8"):
        Vocabulary.load(path)


def test_vocabulary_line_with_two_words_names_the_line(tmp_path) -> None:
    path = tmp_path / "vocab.txt"
    path.write_text("<S>\n</S>\n<UNK>\nthe\nnew york\ncat\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"vocab\.txt:5: .*one word.*new york"):
        Vocabulary.load(path)


def test_vocabulary_rejects_duplicates_and_missing_specials() -> None:
    with pytest.raises(ValueError, match="more than once"):
        Vocabulary(["<S>", "</S>", "<UNK>", "a", "a"])
    with pytest.raises(ValueError, match="first three"):
        Vocabulary(["a", "<S>", "</S>", "<UNK>"])


# ----------------------------------------------------------------------------- tokenizer


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("I don't know.", ["I", "do", "n't", "know", "."]),
        ("We can't, they won't!", ["We", "ca", "n't", ",", "they", "wo", "n't", "!"]),
        ("John's car isn't here", ["John", "'s", "car", "is", "n't", "here"]),
        ("They're sure we'll go", ["They", "'re", "sure", "we", "'ll", "go"]),
        ("Hello, world! (Really?)", ["Hello", ",", "world", "!", "(", "Really", "?", ")"]),
        ("It costs $3,000.50 today.", ["It", "costs", "$", "3,000.50", "today", "."]),
        ("The U.S. economy grew.", ["The", "U.S.", "economy", "grew", "."]),
        ("a well-known state-of-the-art model", ["a", "well-known", "state-of-the-art", "model"]),
        ("", []),
    ],
)
def test_tokenize_ptb_style(text: str, expected: list[str]) -> None:
    assert tokenize(text) == expected


def test_tokenize_is_idempotent_on_tokenised_text() -> None:
    tokens = tokenize("I don't think the U.S. paid $3,000.50, do you?")
    assert tokenize(" ".join(tokens)) == tokens


def test_tokenize_wikitext_maps_escapes_and_unk() -> None:
    text = " The state @-@ of @-@ the @-@ art <unk> cost 1 @,@ 000 @.@ 5 . \n"
    assert tokenize_wikitext(text) == [
        "The", "state", "-", "of", "-", "the", "-", "art", "<UNK>", "cost", "1", ",", "000", ".", "5", ".",
    ]  # fmt: skip


def test_split_sentences_after_end_punctuation() -> None:
    tokens = ["Hi", ".", "Who", "?", "!", "Me", "too", "!", "tail"]
    assert split_sentences(tokens, max_tokens=100) == [["Hi", "."], ["Who", "?", "!"], ["Me", "too", "!"], ["tail"]]
    assert split_sentences([], max_tokens=5) == []


def test_split_sentences_caps_length() -> None:
    tokens = [f"w{i}" for i in range(7)] + ["."] + ["x", "."]
    pieces = split_sentences(tokens, max_tokens=3)
    assert pieces == [["w0", "w1", "w2"], ["w3", "w4", "w5"], ["w6", "."], ["x", "."]]
    assert [t for p in pieces for t in p] == tokens  # nothing lost or reordered
