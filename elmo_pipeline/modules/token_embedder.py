"""The baseline token input: a randomly initialised word embedding and a character CNN.

    v_k = [E_word[w_k]; max_j ReLU(conv_width(E_char[c_k,1..C]))_j]       (Ma & Hovy 2016; Lample et al. 2016)

No pretrained word vectors are available offline (the paper's baselines used GloVe), so the word
embedding starts random; the character CNN (128 filters of width 3 in the paper's NER setup) gives
every word, seen in training or not, a spelling-based vector.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class TokenEmbedder(nn.Module):
    """Word embedding + character CNN, concatenated.

    Args:
        num_words: word vocabulary size (id 0 padding, 1 unknown).
        num_chars: character vocabulary size (id 0 padding, 1 unknown).
        word_dim: word embedding size (0: no word embedding).
        char_dim: character embedding size.
        char_filters: convolution filters (0: no character CNN).
        char_width: convolution width.
    """

    def __init__(
        self,
        num_words: int,
        num_chars: int,
        word_dim: int = 50,
        char_dim: int = 16,
        char_filters: int = 128,
        char_width: int = 3,
    ) -> None:
        super().__init__()
        if word_dim + char_filters <= 0:
            raise ValueError(
                "token_embedder: word_dim and char_filters are both 0 (--model.word_dim, --model.char_filters)"
            )
        self.word_embedding = nn.Embedding(num_words, word_dim, padding_idx=0) if word_dim else None
        self.char_embedding = nn.Embedding(num_chars, char_dim, padding_idx=0) if char_filters else None
        self.char_conv = nn.Conv1d(char_dim, char_filters, kernel_size=char_width) if char_filters else None
        self.char_width = char_width
        self.output_dim = word_dim + char_filters

    def forward(self, words: torch.Tensor, chars: torch.Tensor) -> torch.Tensor:
        """Shapes: B batch, T tokens, C characters.

        Args:
            words: (B, T) word ids.
            chars: (B, T, C) character ids.

        Returns:
            (B, T, word_dim + char_filters).
        """
        parts = []
        if self.word_embedding is not None:
            parts.append(self.word_embedding(words))  # (B, T, W)
        if self.char_conv is not None:
            B, T, C = chars.shape
            if C < self.char_width:
                chars = F.pad(chars, (0, self.char_width - C))  # (B, T, width)
            flat = chars.reshape(B * T, -1)  # (B*T, C)
            x = self.char_embedding(flat).transpose(1, 2)  # (B*T, char_dim, C)
            h = self.char_conv(x)  # (B*T, filters, C - width + 1)
            # only windows that start inside the word count, so that a word's vector never depends on
            # how far the batch pads its characters
            windows = ((flat > 0).sum(dim=1) - self.char_width + 1).clamp(min=1)  # (B*T,)
            inside = torch.arange(h.shape[-1], device=h.device).unsqueeze(0) < windows.unsqueeze(1)  # (B*T, W)
            h = h.masked_fill(~inside.unsqueeze(1), torch.finfo(h.dtype).min)  # (B*T, filters, W)
            parts.append(torch.relu(h.amax(dim=-1)).reshape(B, T, -1))  # (B, T, filters)
        return torch.cat(parts, dim=-1)  # (B, T, W + filters)
