"""An attention encoder-decoder for translation (Bahdanau et al. 2015), with optional language-model fusion.

Shapes: B batch, S source positions, T target positions, E embedding, K = 2 x encoder size, D decoder
size, V target vocabulary.

    k_1..k_S       = BiLSTM(E_src[x_1..x_S])                        encoder outputs (B, S, K), packed: padding unseen
    s_0, m_0       = tanh(W_init [h_fwd,S; h_bwd,1])                 decoder state from the encoder's final states
    c_t, a_t       = Attention(query=s_{t-1}, keys=k)                additive attention, padding masked (B, K), (B, S)
    s_t            = LSTMCell([E_tgt[y_{t-1}]; c_t], s_{t-1})        the decoder
    o_t            = tanh(W_o [s_t; c_t; E_tgt[y_{t-1}]])            deep output (B, D)
    logits_t       = W_v dropout(o_t)                                no fusion, shallow fusion
                   = ColdFusion(dropout(o_t), log p_LM(. | y_<t))     cold fusion (modules/fusion.py)

The attention is Bahdanau's: additive scores, queried with the previous decoder state, and the
context enters the recurrence. Training is teacher-forced. Decoding (:mod:`elmo_pipeline.models.search`)
is greedy or beam search, and shallow fusion adds ``lambda * log p_LM`` to the scores there.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import NamedTuple

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from elmo_pipeline.models.target_lm import TargetLM
from elmo_pipeline.modules.attention import AdditiveAttention
from elmo_pipeline.modules.fusion import ColdFusion

FUSIONS: tuple[str, ...] = ("none", "shallow", "cold")


@dataclass
class Seq2SeqConfig:
    """Sizes and switches of :class:`Seq2Seq`.

    Attributes:
        source_vocab_size: source words, specials included.
        target_vocab_size: V, target words, specials included.
        embedding_dim: E, both embeddings.
        encoder_dim: LSTM size per direction (K = 2 x this).
        decoder_dim: D.
        attention_dim: hidden size of the attention score.
        dropout: on the embeddings and before the output layer.
        fusion: ``none``; ``shallow`` (the model is as ``none``, the LM joins at search); ``cold``.
        cold_lm_dim: size of the LM feature in cold fusion.
        cold_hidden_dim: size of cold fusion's hidden layer.
    """

    source_vocab_size: int
    target_vocab_size: int
    embedding_dim: int = 256
    encoder_dim: int = 256
    decoder_dim: int = 512
    attention_dim: int = 256
    dropout: float = 0.3
    fusion: str = "none"
    cold_lm_dim: int = 256
    cold_hidden_dim: int = 512

    def __post_init__(self) -> None:
        if self.fusion not in FUSIONS:
            raise ValueError(f"seq2seq: fusion must be one of {FUSIONS}, got {self.fusion!r} (--model.fusion)")

    def to_dict(self) -> dict:
        return asdict(self)


class Memory(NamedTuple):
    """The encoded source: keys (B, S, K), their projection (B, S, A) and the (B, S) mask."""

    keys: torch.Tensor
    projected: torch.Tensor
    mask: torch.Tensor


class State(NamedTuple):
    """The decoder state: h (B, D), c (B, D), and the LM's state (cold fusion) or None."""

    h: torch.Tensor
    c: torch.Tensor
    lm: list | None


class Seq2Seq(nn.Module):
    """The encoder-decoder.

    Args:
        config: sizes and the fusion.
        lm: the frozen target-side LM; required for ``cold`` fusion (and used by shallow-fusion search).
    """

    def __init__(self, config: Seq2SeqConfig, lm: TargetLM | None = None) -> None:
        super().__init__()
        if config.fusion == "cold" and lm is None:
            raise ValueError("seq2seq: cold fusion needs a language model (--model.lm)")
        self.config = config
        E, D, K = config.embedding_dim, config.decoder_dim, 2 * config.encoder_dim
        self.source_embedding = nn.Embedding(config.source_vocab_size, E)
        self.target_embedding = nn.Embedding(config.target_vocab_size, E)
        self.encoder = nn.LSTM(E, config.encoder_dim, batch_first=True, bidirectional=True)
        self.init_state = nn.Linear(K, 2 * D)
        self.attention = AdditiveAttention(D, K, config.attention_dim)
        self.decoder = nn.LSTMCell(E + K, D)
        self.deep_output = nn.Linear(D + K + E, D)
        self.dropout = nn.Dropout(config.dropout)
        self.lm = lm  # frozen; its parameters are not trained (TargetLM sets requires_grad False)
        if config.fusion == "cold":
            self.fusion = ColdFusion(D, config.target_vocab_size, config.cold_lm_dim, config.cold_hidden_dim)
            self.output = None
        else:
            self.fusion = None
            self.output = nn.Linear(D, config.target_vocab_size)

    def encode(self, source: torch.Tensor, lengths: torch.Tensor) -> tuple[Memory, State]:
        """Args: source (B, S) ids, lengths (B,) >= 1. Returns: the memory and the initial decoder state."""
        embedded = self.dropout(self.source_embedding(source))  # (B, S, E)
        packed = pack_padded_sequence(embedded, lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, (h_n, _) = self.encoder(packed)
        keys, _ = pad_packed_sequence(out, batch_first=True, total_length=source.shape[1])  # (B, S, K)
        final = torch.cat([h_n[0], h_n[1]], dim=-1)  # (B, K): forward at the last token, backward at the first
        h, c = torch.tanh(self.init_state(final)).chunk(2, dim=-1)  # 2 x (B, D)
        mask = torch.arange(source.shape[1], device=source.device).unsqueeze(0) < lengths.unsqueeze(1)  # (B, S)
        lm_state = self.lm.initial_state(source.shape[0]) if self.config.fusion == "cold" else None
        return Memory(keys, self.attention.project_keys(keys), mask), State(h.contiguous(), c.contiguous(), lm_state)

    def recur(self, previous: torch.Tensor, state: State, memory: Memory) -> tuple[torch.Tensor, State, torch.Tensor]:
        """One step of the decoder's recurrence, up to the output layer.

        Args:
            previous: (B,) the previous target ids (``<S>`` first).
            state: the decoder state after the previous step (its LM state is passed on unchanged).
            memory: the encoded source.

        Returns:
            The deep output dropout(o_t) (B, D), the new state and the attention weights (B, S).
        """
        embedded = self.dropout(self.target_embedding(previous))  # (B, E)
        context, weights = self.attention(state.h, memory.keys, memory.projected, memory.mask)  # (B, K), (B, S)
        h, c = self.decoder(torch.cat([embedded, context], dim=-1), (state.h, state.c))  # 2 x (B, D)
        deep = self.dropout(torch.tanh(self.deep_output(torch.cat([h, context, embedded], dim=-1))))  # (B, D)
        return deep, State(h, c, state.lm), weights

    def readout(self, deep: torch.Tensor, lm_log_probs: torch.Tensor | None = None) -> torch.Tensor:
        """The output layer: deep outputs (..., D) [and the LM's log-probabilities (..., V), cold fusion] -> logits
        (..., V)."""
        if self.fusion is not None:
            return self.fusion(deep, lm_log_probs)
        return self.output(deep)

    def step(self, previous: torch.Tensor, state: State, memory: Memory) -> tuple[torch.Tensor, State, torch.Tensor]:
        """One decoding step (search): :meth:`recur`, the LM stepped from ``state.lm`` (cold fusion), :meth:`readout`.

        Returns:
            The logits (B, V), the new state and the attention weights (B, S).
        """
        deep, state, weights = self.recur(previous, state, memory)
        lm_log_probs = None
        if self.fusion is not None:
            lm_log_probs, lm_state = self.lm.step(previous, state.lm)  # (B, V)
            state = state._replace(lm=lm_state)
        return self.readout(deep, lm_log_probs), state, weights

    def forward(self, source: torch.Tensor, lengths: torch.Tensor, target_in: torch.Tensor) -> torch.Tensor:
        """Teacher forcing: the recurrence step by step, then the output layer once over every step (one large
        matrix product instead of T small ones; the same function as :meth:`step` applied T times).

        Args:
            source: (B, S) source ids, padded.
            lengths: (B,) source lengths.
            target_in: (B, T) ``<S> y_1 .. y_{T-1}``, padded (any id at padding; the loss masks it).

        Returns:
            (B, T, V) logits of y_1 .. y_T.
        """
        memory, state = self.encode(source, lengths)
        deep = []
        for t in range(target_in.shape[1]):
            step_deep, state, _ = self.recur(target_in[:, t], state, memory)
            deep.append(step_deep)
        lm_log_probs = self.lm(target_in) if self.fusion is not None else None  # (B, T, V), no gradient
        return self.readout(torch.stack(deep, dim=1), lm_log_probs)  # (B, T, V)
