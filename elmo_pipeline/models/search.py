"""Decoding for :class:`~elmo_pipeline.models.seq2seq.Seq2Seq`: greedy and beam search, with shallow fusion.

Every step scores a word with

    score(y_t) = log p_s2s(y_t | y_<t, x) + lambda * log p_LM(y_t | y_<t)       (Gulcehre et al. 2015)

``lambda = 0`` (or no LM) is plain decoding. Beam search keeps the ``beam`` best prefixes by their
summed score; a hypothesis ends with ``</S>``, and the finished ones are ranked by their score
divided by ``length ** length_penalty`` (length normalisation; 0 turns it off, 1 is the mean per
word; the length counts ``</S>``). Greedy decoding is beam search with a beam of one, computed for a
whole batch at once.

Beam search also keeps, for every output word, the source position that the attention weighed most
when the word was predicted; :func:`replace_unknowns` uses it to put a source word where the model
wrote ``<UNK>`` (Luong et al. 2015, "Addressing the rare word problem": copy the aligned word).
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import torch

from elmo_pipeline.models.seq2seq import Memory, Seq2Seq, State

BOS_ID, EOS_ID = 0, 1  # the target vocabulary's <S> and </S> (text.vocab's order)
UNK_WORDS = ("keep", "copy", "delete")  # what translation does with an output <UNK> (replace_unknowns)


class Translation(NamedTuple):
    """A decoded sentence: its target ids (without ``</S>``) and, for each, the source position that
    the attention weighed most when the word was predicted."""

    ids: list[int]
    aligned: list[int]


def replace_unknowns(
    words: list[str], aligned: list[int], source: list[str], mode: Literal["keep", "copy", "delete"], unk: str = "<UNK>"
) -> list[str]:
    """The output words with each ``unk`` kept, replaced by the source word it is aligned with
    (``copy``: names and numbers pass through), or dropped (``delete``)."""
    if mode not in UNK_WORDS:
        raise ValueError(f"translation: unknown words are kept, copied or deleted, got {mode!r} (--unk)")
    if mode == "keep":
        return list(words)
    out = []
    for word, position in zip(words, aligned, strict=True):
        if word != unk:
            out.append(word)
        elif mode == "copy" and 0 <= position < len(source):
            out.append(source[position])
    return out


def max_length(source_length: int) -> int:
    """The longest output decoded for a source of this many tokens."""
    return 2 * source_length + 10


def _scores(model: Seq2Seq, logits: torch.Tensor, previous: torch.Tensor, lm_state, lm_weight: float):
    """log p_s2s (+ lambda log p_LM) of every word, (N, V), and the LM's new state."""
    scores = torch.log_softmax(logits.float(), dim=-1)  # (N, V)
    if lm_weight and model.lm is not None:
        lm_log_probs, lm_state = model.lm.step(previous, lm_state)  # (N, V)
        scores = scores + lm_weight * lm_log_probs
    return scores, lm_state


@torch.no_grad()
def greedy(model: Seq2Seq, source: torch.Tensor, lengths: torch.Tensor, lm_weight: float = 0.0) -> list[list[int]]:
    """The argmax word at every step, for a batch; each output ends before ``</S>`` (not included)."""
    memory, state = model.encode(source, lengths)
    B = source.shape[0]
    previous = torch.full((B,), BOS_ID, dtype=torch.long, device=source.device)  # (B,)
    lm_state = model.lm.initial_state(B) if lm_weight and model.lm is not None else None
    outputs: list[list[int]] = [[] for _ in range(B)]
    done = torch.zeros(B, dtype=torch.bool, device=source.device)
    for _ in range(max(max_length(int(n)) for n in lengths)):
        logits, state, _ = model.step(previous, state, memory)
        scores, lm_state = _scores(model, logits, previous, lm_state, lm_weight)
        previous = scores.argmax(dim=-1)  # (B,)
        for b in torch.nonzero(~done).flatten().tolist():
            if int(previous[b]) == EOS_ID or len(outputs[b]) >= max_length(int(lengths[b])):
                done[b] = True
            else:
                outputs[b].append(int(previous[b]))
        if done.all():
            break
    return outputs


@torch.no_grad()
def translate(
    model: Seq2Seq,
    source: torch.Tensor,
    beam: int = 5,
    lm_weight: float = 0.0,
    length_penalty: float = 1.0,
) -> Translation:
    """The best translation of one source sentence, by beam search, with its alignment.

    Args:
        model: the encoder-decoder, in eval mode.
        source: (S,) source ids of one sentence.
        beam: hypotheses kept at every step.
        lm_weight: lambda of shallow fusion (needs ``model.lm``).
        length_penalty: finished hypotheses are ranked by score / length ** this.

    Returns:
        The target ids, without ``</S>``, and each one's most attended source position.
    """
    if beam < 1:
        raise ValueError(f"beam search: beam must be at least 1, got {beam}")
    if lm_weight and model.lm is None:
        raise ValueError("beam search: shallow fusion (lm_weight > 0) needs a model with a language model")
    memory, state = model.encode(source.unsqueeze(0), torch.tensor([source.shape[0]], device=source.device))
    limit = max_length(source.shape[0])
    prefixes: list[list[int]] = [[]]
    alignments: list[list[int]] = [[]]  # per hypothesis, the most attended source position of each word
    totals = torch.zeros(1, device=source.device)  # (k,) summed scores of the live hypotheses
    previous = torch.full((1,), BOS_ID, dtype=torch.long, device=source.device)
    lm_state = model.lm.initial_state(1) if lm_weight else None
    finished: list[tuple[float, list[int], list[int]]] = []
    for step in range(limit + 1):
        k = len(prefixes)
        expanded = Memory(*(m.expand(k, *m.shape[1:]) for m in memory))
        logits, state, attention = model.step(previous, state, expanded)  # (k, V), state, (k, S)
        attended = attention.argmax(dim=-1).tolist()  # (k,): where each hypothesis looked for this word
        scores, lm_state = _scores(model, logits, previous, lm_state, lm_weight)  # (k, V)
        candidates = (totals.unsqueeze(1) + scores).flatten()  # (k * V,)
        if step == limit:  # out of room: every hypothesis must end here
            ends = totals + scores[:, EOS_ID]
            finished.extend(
                (float(ends[i]) / (len(prefixes[i]) + 1) ** length_penalty, prefixes[i], alignments[i])
                for i in range(k)
            )
            break
        best = torch.topk(candidates, min(2 * beam, candidates.numel()))  # enough to refill after </S>
        keep_rows, keep_words, keep_totals = [], [], []
        V = scores.shape[1]
        for value, index in zip(best.values.tolist(), best.indices.tolist(), strict=True):
            row, word = divmod(index, V)
            if word == EOS_ID:
                finished.append((value / (len(prefixes[row]) + 1) ** length_penalty, prefixes[row], alignments[row]))
            else:
                keep_rows.append(row)
                keep_words.append(word)
                keep_totals.append(value)
            if len(finished) >= beam or len(keep_rows) == beam:
                break
        if len(finished) >= beam or not keep_rows:
            break
        rows = torch.tensor(keep_rows, device=source.device)
        prefixes = [prefixes[r] + [w] for r, w in zip(keep_rows, keep_words, strict=True)]
        alignments = [alignments[r] + [attended[r]] for r in keep_rows]
        totals = torch.tensor(keep_totals, device=source.device)
        previous = torch.tensor(keep_words, device=source.device)
        state = State(state.h[rows], state.c[rows], model.lm.reorder(state.lm, rows) if state.lm is not None else None)
        if lm_state is not None:
            lm_state = model.lm.reorder(lm_state, rows)
    _, ids, aligned = max(finished, key=lambda item: item[0])
    return Translation(ids, aligned)
