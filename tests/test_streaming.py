"""StreamingBiLM, the engine of `embed`: the same layers as BiLM.forward, chunk by chunk, in bounded memory."""

from __future__ import annotations

import random

import h5py
import numpy as np
import pytest
import torch
from tiny_models import tiny_bilm as shared_tiny_bilm

from elmo_pipeline import embed as embed_module
from elmo_pipeline.embed import embed_file
from elmo_pipeline.models import BiLM
from elmo_pipeline.models.elmo import bilm_layers
from elmo_pipeline.models.streaming import StreamingBiLM
from elmo_pipeline.modules.lstm import bf16_supported

WORDS = "the a cat sat on mat dog ran far away , . naïve café très".split()


def tiny_bilm(**overrides) -> BiLM:
    """The shared tiny biLM (seed 0) with two filters and small clips, so that the clamps bind on random weights."""
    return shared_tiny_bilm(0, **{"filters": [[1, 4], [2, 8]], "cell_clip": 0.5, "proj_clip": 0.4, **overrides})


def random_sentences(count: int, longest: int, seed: int = 0) -> list[list[str]]:
    rng = random.Random(seed)
    return [[rng.choice(WORDS) for _ in range(rng.randint(1, longest))] for _ in range(count)]


def reference(bilm: BiLM, sentences, mode: str = "all", keep: bool = False) -> list[np.ndarray]:
    """Each sentence's layers from BiLM.forward, ([L+1,] n, 2P)."""
    with torch.no_grad():
        layers, mask = bilm_layers(bilm, sentences, keep_sentence_boundaries=keep)
    stacked = torch.stack(layers, dim=1)  # (B, L+1, T, 2P)
    if mode == "average":
        stacked = stacked.mean(dim=1)
    elif mode == "top":
        stacked = stacked[:, -1]
    lengths = mask.sum(dim=1).tolist()
    return [value[..., :n, :] for value, n in zip(stacked.numpy(), lengths, strict=True)]


def streamed(runner: StreamingBiLM, sentences, mode: str = "all", keep: bool = False) -> list[np.ndarray]:
    extra = 2 if keep else 0
    L1, width = runner.num_layers + 1, 2 * runner.P
    shapes = [(L1, len(s) + extra, width) if mode == "all" else (len(s) + extra, width) for s in sentences]
    sinks = [np.full(shape, np.nan, dtype=np.float32) for shape in shapes]  # NaN: a position never written
    runner.run(sentences, sinks, layers=mode, keep_sentence_boundaries=keep)
    return sinks


@pytest.mark.parametrize("chunk_tokens", [1, 3, 7, 10_000])
@pytest.mark.parametrize("mode", ["all", "average", "top"])
def test_equals_bilm_forward_for_any_chunk(chunk_tokens, mode):
    """Chunks of one row-step up to the whole batch: the carried state makes every split exact."""
    bilm = tiny_bilm()
    sentences = random_sentences(9, 14)
    runner = StreamingBiLM(bilm, chunk_tokens=chunk_tokens, cache_tokens=6)  # a cache too small: evictions
    for got, want in zip(streamed(runner, sentences, mode), reference(bilm, sentences, mode), strict=True):
        assert not np.isnan(got).any()
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_sentence_boundaries_kept():
    bilm = tiny_bilm()
    sentences = [*random_sentences(5, 8, seed=1), []]  # an empty sentence is <S> </S> (the activation cache)
    got = streamed(StreamingBiLM(bilm, chunk_tokens=4), sentences, keep=True)
    for g, w in zip(got, reference(bilm, sentences, keep=True), strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)


def test_unclipped_lstmp_matches_the_fused_kernel():
    """Without clipping BiLM.forward runs torch.lstm; the streaming step computes the same function."""
    bilm = tiny_bilm(cell_clip=None, proj_clip=None, num_layers=3)
    sentences = random_sentences(6, 11, seed=2)
    for got, want in zip(streamed(StreamingBiLM(bilm, chunk_tokens=5), sentences), reference(bilm, sentences)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_a_long_sentence_in_small_chunks_equals_the_whole():
    """A 600-token line in chunks of 16 steps: the state carried across 38 chunks each way is exact."""
    bilm = tiny_bilm()
    rng = random.Random(4)
    sentence = [rng.choice(WORDS) for _ in range(600)]
    (got,) = streamed(StreamingBiLM(bilm, chunk_tokens=16), [sentence])
    (want,) = reference(bilm, [sentence])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_each_distinct_token_is_encoded_once(monkeypatch):
    bilm = tiny_bilm()
    sentences = [["the", "cat", "the", "cat"], ["the", "dog"]]
    runner = StreamingBiLM(bilm)
    encoded: list[str] = []
    original = runner._encode
    monkeypatch.setattr(runner, "_encode", lambda tokens: encoded.extend(tokens) or original(tokens))
    streamed(runner, sentences)
    streamed(runner, [["the", "cat", "sat"]])  # a later batch: only the new word is encoded
    assert sorted(encoded) == sorted(["<S>", "</S>", "the", "cat", "dog", "sat"])


def test_rejects_other_cells_and_embed_falls_back_to_forward(tmp_path):
    bilm = tiny_bilm(cell="gru", cell_clip=None, proj_clip=None)
    assert not StreamingBiLM.supports(bilm)
    with pytest.raises(ValueError, match="lstmp cells only"):
        StreamingBiLM(bilm)
    lines = [" ".join(s) for s in random_sentences(5, 9, seed=5)]
    source = tmp_path / "in.txt"
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    embed_file(bilm, source, tmp_path / "out.hdf5", device="cpu", progress=False)
    with h5py.File(tmp_path / "out.hdf5") as f:
        for i, line in enumerate(lines):
            np.testing.assert_allclose(f[str(i)][...], reference(bilm, [line.split()])[0], rtol=1e-5, atol=1e-6)


def test_embed_streams_a_long_line_into_its_dataset(tmp_path, monkeypatch):
    """A line over --max-batch-tokens is written chunk by chunk into the HDF5 dataset, never held whole."""
    bilm = tiny_bilm()
    rng = random.Random(6)
    lines = ["a short line", " ".join(rng.choice(WORDS) for _ in range(300)), "another one"]
    source = tmp_path / "in.txt"
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    writes: list[tuple] = []
    original = h5py.Dataset.__setitem__
    monkeypatch.setattr(
        h5py.Dataset, "__setitem__", lambda self, key, value: writes.append(key) or original(self, key, value)
    )
    embed_file(bilm, source, tmp_path / "out.hdf5", max_batch_tokens=64, chunk_tokens=50, device="cpu", progress=False)
    assert len(writes) >= 2 * 6  # forward and backward, at least six chunks each
    with h5py.File(tmp_path / "out.hdf5") as f:
        for i, line in enumerate(lines):
            np.testing.assert_allclose(f[str(i)][...], reference(bilm, [line.split()])[0], rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(not bf16_supported(torch.device("cpu")), reason="this CPU has no native bf16 matmul")
def test_bf16_is_close_to_fp32():
    bilm = tiny_bilm()
    sentences = random_sentences(8, 12, seed=7)
    fp32 = streamed(StreamingBiLM(bilm), sentences)
    bf16 = streamed(StreamingBiLM(bilm, precision="bf16"), sentences)
    worst = max(float(np.abs(a - b).max()) for a, b in zip(fp32, bf16, strict=True))
    assert 0 < worst < 0.05  # bf16 products differ from fp32, by a few 1e-3 on this scale


def test_bf16_refused_where_the_hardware_lacks_it(tmp_path, monkeypatch):
    monkeypatch.setattr(embed_module, "bf16_supported", lambda device: False)
    source = tmp_path / "in.txt"
    source.write_text("a b\n", encoding="utf-8")
    with pytest.raises(ValueError, match="--precision bf16: .*use --precision fp32"):
        embed_file(tiny_bilm(), source, tmp_path / "out.hdf5", precision="bf16", device="cpu", progress=False)
    assert not (tmp_path / "out.hdf5").exists()
