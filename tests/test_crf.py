"""The CRF against brute-force enumeration of every tag sequence, and Viterbi's BIOUL constraints."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from elmo_pipeline.modules.crf import ConditionalRandomField, bioul_allowed_transitions

TAGS = ["O", "B-PER", "I-PER", "L-PER", "U-PER", "B-LOC", "I-LOC", "L-LOC", "U-LOC"]


def _brute_scores(crf: ConditionalRandomField, emissions: torch.Tensor, length: int) -> dict[tuple[int, ...], float]:
    """score(x, y) of every tag sequence y of ``length``, written out term by term."""
    transitions, start, end = crf.potentials()
    scores = {}
    for path in itertools.product(range(crf.num_tags), repeat=length):
        s = start[path[0]] + end[path[-1]]
        s = s + sum(emissions[t, path[t]] for t in range(length))
        s = s + sum(transitions[path[t - 1], path[t]] for t in range(1, length))
        scores[path] = float(s.detach())
    return scores


def _is_allowed(path: list[int], allowed: set[tuple[int, int]], K: int) -> bool:
    steps = [K, *path, K + 1]  # START ... END
    return all((a, b) in allowed for a, b in zip(steps, steps[1:]))


@pytest.mark.parametrize("constrained", [False, True])
def test_log_partition_equals_brute_force_on_three_tokens(constrained):
    torch.manual_seed(1)
    allowed = bioul_allowed_transitions(TAGS) if constrained else None
    crf = ConditionalRandomField(len(TAGS), allowed)
    with torch.no_grad():
        crf.start_transitions.normal_()
        crf.end_transitions.normal_()
    emissions = torch.randn(2, 3, len(TAGS))  # (B, T, K); the second sequence has 2 tokens
    mask = torch.tensor([[True, True, True], [True, True, False]])
    log_z = crf.log_partition(emissions, mask)
    for b, length in enumerate((3, 2)):
        brute = _brute_scores(crf, emissions[b], length)
        if constrained:  # forbidden sequences carry a -10000 penalty: they contribute nothing
            K = len(TAGS)
            pairs = set(allowed)
            brute = {p: s for p, s in brute.items() if _is_allowed(list(p), pairs, K)}
        expected = math.log(sum(math.exp(s) for s in brute.values()))
        assert log_z[b].item() == pytest.approx(expected, abs=1e-4)


def test_log_likelihood_is_a_distribution_over_sequences():
    crf = ConditionalRandomField(3)
    emissions = torch.randn(1, 3, 3)
    mask = torch.ones(1, 3, dtype=torch.bool)
    paths = torch.tensor(list(itertools.product(range(3), repeat=3)))  # (27, 3)
    ll = crf(emissions.expand(27, -1, -1), paths, mask.expand(27, -1))  # (27,)
    assert ll.exp().sum().item() == pytest.approx(1.0, abs=1e-5)
    (-ll.mean()).backward()
    assert crf.transitions.grad is not None and crf.transitions.grad.abs().sum() > 0


@pytest.mark.parametrize("constrained", [False, True])
def test_viterbi_equals_brute_force_argmax(constrained):
    torch.manual_seed(2)
    allowed = bioul_allowed_transitions(TAGS) if constrained else None
    crf = ConditionalRandomField(len(TAGS), allowed)
    emissions = torch.randn(4, 3, len(TAGS)) * 3
    mask = torch.tensor([[1, 1, 1], [1, 1, 1], [1, 1, 0], [1, 0, 0]], dtype=torch.bool)
    tags, scores = crf.viterbi(emissions, mask)
    for b in range(4):
        length = int(mask[b].sum())
        brute = _brute_scores(crf, emissions[b], length)
        best = max(brute, key=brute.get)
        assert tags[b, :length].tolist() == list(best)
        assert tags[b, length:].eq(0).all()
        assert scores[b].item() == pytest.approx(brute[best], abs=1e-3)


def test_viterbi_never_outputs_a_forbidden_bioul_transition():
    torch.manual_seed(3)
    allowed = set(bioul_allowed_transitions(TAGS))
    crf = ConditionalRandomField(len(TAGS), sorted(allowed))
    with torch.no_grad():  # learned scores that prefer forbidden moves; the constraints must still win
        crf.transitions.normal_(std=5.0)
    K = len(TAGS)
    for _ in range(30):
        emissions = torch.randn(8, 7, K) * 5
        emissions[..., [2, 3, 6, 7]] += 4.0  # push towards I-/L- tags, which cannot start an entity
        lengths = torch.randint(1, 8, (8,))
        mask = torch.arange(7).unsqueeze(0) < lengths.unsqueeze(1)
        tags, _ = crf.viterbi(emissions, mask)
        for b in range(8):
            path = tags[b, : lengths[b]].tolist()
            assert _is_allowed(path, allowed, K), [TAGS[i] for i in path]


def test_bioul_transitions_by_hand():
    tags = ["O", "B-X", "I-X", "L-X", "U-X"]
    allowed = set(bioul_allowed_transitions(tags))
    START, END = 5, 6
    name = {i: t for i, t in enumerate(tags)} | {START: "START", END: "END"}
    got = {(name[a], name[b]) for a, b in allowed}
    expected = {(s, t) for s in ("START", "O", "L-X", "U-X") for t in ("O", "B-X", "U-X")}
    expected |= {(s, t) for s in ("O", "L-X", "U-X") for t in ("END",)}
    expected |= {(s, t) for s in ("B-X", "I-X") for t in ("I-X", "L-X")}
    assert got == expected
    with pytest.raises(ValueError, match="not a BIOUL tag"):
        bioul_allowed_transitions(["O", "E-X"])
