"""Text to ids: ELMo character ids, the word vocabulary, tokenisation."""

from elmo_pipeline.text.chars import (
    BOS_TOKEN,
    EOS_TOKEN,
    MAX_CHARS,
    NUM_CHARS,
    UNK_TOKEN,
    batch_to_char_ids,
    is_truncated,
    word_char_ids,
)
from elmo_pipeline.text.tokenize import detokenize, split_sentences, tokenize, tokenize_wikitext
from elmo_pipeline.text.vocab import Vocabulary

__all__ = [
    "BOS_TOKEN",
    "EOS_TOKEN",
    "MAX_CHARS",
    "NUM_CHARS",
    "UNK_TOKEN",
    "Vocabulary",
    "batch_to_char_ids",
    "detokenize",
    "is_truncated",
    "split_sentences",
    "tokenize",
    "tokenize_wikitext",
    "word_char_ids",
]
