"""The activation cache: float16 memory-mapped layers, keyed by the biLM and the data, read instead of rerun."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from tiny_models import tiny_bilm

from elmo_pipeline.data.activation_cache import (
    ActivationCache,
    bilm_fingerprint,
    build_activation_cache,
    data_fingerprint,
)
from elmo_pipeline.models import BiLM, BiLMConfig
from elmo_pipeline.models.elmo import Elmo, bilm_layers

SENTENCES = [["a", "short", "one"], ["hello"], [], ["four", "tokens", "right", "here"], ["x", "y"]]


def fresh_layers(bilm: BiLM, sentence: list[str]) -> np.ndarray:
    with torch.no_grad():
        layers, _ = bilm_layers(bilm, [sentence])
    return torch.stack(layers, dim=2)[0].numpy()  # (n, L+1, 2P)


def test_cache_holds_every_layer_in_float16_with_an_index(tmp_path):
    bilm = tiny_bilm()
    cache = build_activation_cache(bilm, SENTENCES, tmp_path, batch_size=2)
    assert len(cache) == len(SENTENCES) and (cache.num_layers, cache.dim) == (3, 16)
    assert isinstance(cache.activations, np.memmap) and cache.activations.dtype == np.float16
    lengths = [len(s) for s in SENTENCES]
    assert cache.index[:, 1].tolist() == lengths
    assert cache.index[:, 0].tolist() == np.concatenate([[0], np.cumsum(lengths)[:-1]]).tolist()
    for i, sentence in enumerate(SENTENCES):
        item = cache[i]
        assert item.dtype == torch.float16 and item.shape == (len(sentence), 3, 16)
        np.testing.assert_allclose(item.float().numpy(), fresh_layers(bilm, sentence), rtol=2e-3, atol=2e-3)
    meta = json.loads((cache.directory / "meta.json").read_text())
    assert meta["bilm_hash"] == bilm_fingerprint(bilm) and meta["data_hash"] == data_fingerprint(SENTENCES)


def test_second_build_reads_the_cache_instead_of_running_the_bilm(tmp_path, monkeypatch):
    bilm = tiny_bilm()
    first = build_activation_cache(bilm, SENTENCES, tmp_path)

    def refuse(*args, **kwargs):
        raise AssertionError("the biLM ran although its activations are cached")

    monkeypatch.setattr(bilm, "forward", refuse)
    again = build_activation_cache(bilm, SENTENCES, tmp_path)
    assert again.directory == first.directory
    reopened = ActivationCache(first.directory)  # a later run, straight from disk
    assert torch.equal(reopened[3], first[3])
    assert [p.name for p in tmp_path.iterdir()] == [first.directory.name]  # no temporary folders left


def test_a_different_bilm_or_dataset_never_reads_a_stale_cache(tmp_path):
    bilm = tiny_bilm(seed=0)
    base = build_activation_cache(bilm, SENTENCES, tmp_path)
    changed = tiny_bilm(seed=0)
    with torch.no_grad():
        changed.forward_layers[1].weight_hr[0, 0] += 1e-3  # one weight
    other_weights = build_activation_cache(changed, SENTENCES, tmp_path)
    other_config = tiny_bilm(seed=0)
    other_config.config.cell_clip = 1.0  # same weights, different computation
    other_data = build_activation_cache(bilm, [*SENTENCES[:-1], ["x", "z"]], tmp_path)
    directories = {base.directory, other_weights.directory, other_data.directory}
    assert len(directories) == 3
    assert bilm_fingerprint(other_config) != bilm_fingerprint(bilm)
    assert not torch.equal(other_weights[0], base[0])
    np.testing.assert_allclose(other_data[4].float().numpy(), fresh_layers(bilm, ["x", "z"]), atol=2e-3)
    # the data hash sees token boundaries, not just the characters
    assert data_fingerprint([["ab", "c"]]) != data_fingerprint([["a", "bc"]])
    assert data_fingerprint([["a"], ["b"]]) != data_fingerprint([["a", "b"]])


def test_softmax_does_not_change_the_key():
    with_softmax, without = tiny_bilm(seed=0, vocab_size=10), tiny_bilm(seed=0)
    encoder = {k: v for k, v in with_softmax.state_dict().items() if not k.startswith("softmax.")}
    without.load_state_dict(encoder)
    assert bilm_fingerprint(with_softmax) == bilm_fingerprint(without)


def test_elmo_mixes_cached_layers_like_fresh_ones(tmp_path):
    bilm = tiny_bilm()
    elmo = Elmo(bilm, num_output_representations=2, dropout=0.0, layer_norm=True)
    cache = build_activation_cache(bilm, SENTENCES, tmp_path)
    indices = [0, 3, 1]
    layers, mask = cache.batch(indices)
    assert len(layers) == 3 and layers[0].shape == (3, 4, 16) and layers[0].dtype == torch.float32
    with torch.no_grad():
        cached = elmo.mix(layers, mask)
        fresh = elmo([SENTENCES[i] for i in indices])
    assert torch.equal(cached.mask, fresh.mask)
    for a, b in zip(cached.representations, fresh.representations):
        torch.testing.assert_close(a, b, rtol=5e-3, atol=5e-3)


def test_dataloader_over_the_cache(tmp_path):
    cache = build_activation_cache(tiny_bilm(), SENTENCES, tmp_path)
    loader = torch.utils.data.DataLoader(cache, batch_size=2, collate_fn=ActivationCache.collate)
    batches = list(loader)
    assert len(batches) == 3
    layers, mask = batches[1]  # sentences 2 (empty) and 3
    assert mask.tolist() == [[False] * 4, [True] * 4] and not layers[0][0].any()


def test_keep_sentence_boundaries_is_a_separate_cache(tmp_path):
    bilm = tiny_bilm()
    plain = build_activation_cache(bilm, SENTENCES, tmp_path)
    bounded = build_activation_cache(bilm, SENTENCES, tmp_path, keep_sentence_boundaries=True)
    assert plain.directory != bounded.directory
    assert bounded.lengths.tolist() == [len(s) + 2 for s in SENTENCES]


def test_corrupt_cache_is_reported(tmp_path):
    cache = build_activation_cache(tiny_bilm(), SENTENCES, tmp_path)
    np.save(cache.directory / "index.npy", np.zeros((2, 2), dtype=np.int64))
    with pytest.raises(ValueError, match="do not match meta.json; delete the folder"):
        ActivationCache(cache.directory)


def test_every_config_field_declares_whether_it_changes_the_layers():
    """The cache key is built from each field's own mark, so a new field cannot be forgotten."""
    import dataclasses

    from elmo_pipeline.models.config import NOT_LAYERS

    assert BiLMConfig.layer_fields() == {f.name for f in dataclasses.fields(BiLMConfig)} - {
        "vocab_size",
        "num_samples",
        "dropout",
        "softmax",
        "adaptive_cutoffs",
        "adaptive_div_value",
        "fast",
        "compile_recurrence",
        "parallel_directions",
    }

    @dataclasses.dataclass
    class Forgotten(BiLMConfig):
        new_switch: bool = False  # no mark

    with pytest.raises(TypeError, match="new_switch"):
        Forgotten.layer_fields()

    @dataclasses.dataclass
    class Marked(BiLMConfig):
        new_switch: bool = dataclasses.field(default=False, metadata=NOT_LAYERS)

    assert "new_switch" not in Marked.layer_fields()


def test_cache_is_built_on_the_device_it_is_given_and_the_bilm_goes_home(tmp_path, monkeypatch):
    bilm = tiny_bilm().train()
    reference = build_activation_cache(bilm, SENTENCES, tmp_path / "cpu")
    moves: list[torch.device] = []
    real_to = bilm.to

    def spy_to(device, *args, **kwargs):  # a stand-in accelerator: record the move, stay on the CPU
        moves.append(torch.device(device))
        return real_to("cpu", *args, **kwargs)

    monkeypatch.setattr(bilm, "to", spy_to)
    cache = build_activation_cache(bilm, SENTENCES, tmp_path / "meta", device=torch.device("meta"))
    assert moves == [torch.device("meta"), torch.device("cpu")]  # to the given device, then back where it was
    assert bilm.training  # its mode restored too
    np.testing.assert_allclose(
        np.asarray(cache.activations, dtype=np.float32), np.asarray(reference.activations, dtype=np.float32), atol=2e-3
    )
    assert np.array_equal(cache.index, reference.index)
