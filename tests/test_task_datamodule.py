"""TaskDataModule: vocabularies from train, seeded samples and batches, cached ELMo layers equal a fresh biLM run."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from elmo_pipeline.data import task_datamodule
from elmo_pipeline.data.bucket_sampler import BucketBatchSampler
from elmo_pipeline.data.task_datamodule import TaskDataModule
from elmo_pipeline.data.task_dataset import UNK
from elmo_pipeline.models.bilm import BiLM
from elmo_pipeline.models.config import BiLMConfig
from elmo_pipeline.models.elmo import bilm_layers
from elmo_pipeline.models.export_folder import save_export

FIXTURES = str(Path(__file__).parent / "fixtures" / "tasks")


def test_vocabulary_comes_from_train_only():
    data = TaskDataModule("ner_conll2003", data_root=FIXTURES)
    train_words = {w for s in data.splits["train"].texts for w in s}
    dev_only = next(w for s in data.splits["validation"].texts for w in s if w not in train_words)
    item = data.splits["validation"][next(i for i, s in enumerate(data.splits["validation"].texts) if dev_only in s)]
    assert UNK in item["words"][0] and data.num_words == len(train_words) + 2
    assert data.labels[0] == "O" and len(data.labels) == 1 + 4 * 4  # BIOUL over PER, LOC, ORG, MISC


def test_pairs_share_distinct_texts_and_samples_are_seeded():
    data = TaskDataModule("nli_snli", data_root=FIXTURES)
    train = data.splits["train"]
    assert len(train.texts) < 2 * len(train)  # premises repeat: the cache holds each text once
    a = TaskDataModule("nli_snli", data_root=FIXTURES, max_train_examples=20, seed=1).splits["train"]
    b = TaskDataModule("nli_snli", data_root=FIXTURES, max_train_examples=20, seed=1).splits["train"]
    c = TaskDataModule("nli_snli", data_root=FIXTURES, max_train_examples=20, seed=2).splits["train"]
    assert len(a) == 20 and a.texts == b.texts and a.texts != c.texts


def test_bucket_sampler_covers_everything_once_and_is_seeded():
    lengths = [5, 1, 9, 3, 7, 2, 8, 4, 6, 10] * 3
    sampler = BucketBatchSampler(lengths, batch_size=4, shuffle=True, seed=0, window=2)
    first = list(sampler)
    assert sorted(i for batch in first for i in batch) == list(range(30)) and len(first) == len(sampler)
    assert list(sampler) == first
    sampler.set_epoch(1)
    assert list(sampler) != first


def test_batches_carry_the_biLM_layers_of_a_fresh_run(tmp_path):
    torch.manual_seed(0)
    bilm = BiLM(BiLMConfig.preset("tiny", cell_dim=16, projection_dim=8, filters=[[1, 8], [2, 8]], num_samples=0))
    export = save_export(tmp_path / "export", bilm)
    data = TaskDataModule("sentiment_sst5", data_root=FIXTURES, elmo=str(export), cache_dir=str(tmp_path / "cache"))
    assert (data.elmo_num_layers, data.elmo_dim) == (3, 16)
    data.setup("fit")
    batch = next(iter(data.val_dataloader()))
    layers, mask = batch["elmo"][0], batch["masks"][0]
    assert len(layers) == 3 and layers[0].shape == (*mask.shape, 16)
    tokens = data.splits["validation"].texts[0]
    ids = [data.word_index.get(w, UNK) for w in tokens]
    b = next(i for i in range(mask.shape[0]) if batch["words"][0][i].tolist()[: int(mask[i].sum())] == ids)
    with torch.no_grad():
        fresh, _ = bilm_layers(bilm.eval(), [tokens])
    for cached, expected in zip(layers, fresh):
        torch.testing.assert_close(cached[b, : len(tokens)], expected[0], atol=2e-3, rtol=2e-3)  # float16 cache
        assert cached[b, len(tokens) :].abs().sum() == 0


def _rms(data: TaskDataModule, split: str) -> list[float]:
    """Layer RMS over the distinct texts of a split, as the batches deliver them."""
    first = {}
    for i, instance in enumerate(data.splits[split].instances):
        first.setdefault(instance.texts[0], i)
    items = [data.splits[split][i]["elmo"][0].float() for i in first.values()]
    layers = torch.cat(items)  # (N, L+1, 2P)
    return layers.pow(2).mean(dim=(0, 2)).sqrt().tolist()


def test_random_control_is_scaled_to_the_pretrained_layer_rms(tmp_path):
    torch.manual_seed(5)
    export = save_export(
        tmp_path / "export",
        BiLM(BiLMConfig.preset("tiny", cell_dim=16, projection_dim=8, filters=[[1, 8], [2, 8]], num_samples=0)),
    )
    cache = str(tmp_path / "cache")
    trained = TaskDataModule("sentiment_sst5", data_root=FIXTURES, elmo=str(export), cache_dir=cache)
    control = TaskDataModule("sentiment_sst5", data_root=FIXTURES, elmo=f"random:{export}", cache_dir=cache)
    unscaled = TaskDataModule(
        "sentiment_sst5", data_root=FIXTURES, elmo=f"random:{export}", cache_dir=cache, match_scale=False
    )
    for data in (trained, control, unscaled):
        data.setup("fit")
    target, matched, raw = _rms(trained, "train"), _rms(control, "train"), _rms(unscaled, "train")
    assert len(control.layer_scale) == 3 and unscaled.layer_scale is None
    # the sample is every training text here (fewer than 2,000), so the match is exact up to float16
    for t, m, r, s in zip(target, matched, raw, control.layer_scale):
        assert m == pytest.approx(t, rel=2e-3) and m == pytest.approx(r * s, rel=2e-3)
    assert any(abs(r - t) / t > 0.1 for r, t in zip(raw, target))  # the unscaled control really differs
    assert control.summary()["random_control_layer_scale"] == control.layer_scale


def test_word_vectors_lowercase_lookup_and_words_of_other_splits(tmp_path):
    glove = tmp_path / "glove.txt"
    plain = TaskDataModule("ner_conll2003", data_root=FIXTURES)
    train_words = {w.lower() for s in plain.splits["train"].texts for w in s}
    test_only = sorted({w.lower() for s in plain.splits["test"].texts for w in s} - train_words)
    some_train = sorted(train_words)[:3]
    glove.write_text("".join(f"{w} {i} 0.5 -1\n" for i, w in enumerate([*some_train, test_only[0]])))
    data = TaskDataModule(
        "ner_conll2003", data_root=FIXTURES, word_vectors=str(glove), lowercase_words=True, cache_dir=str(tmp_path)
    )
    assert data.num_words == len(train_words) + 1 + 2  # the training words, lowercased, + one test word with a vector
    assert test_only[0] in data.word_index and test_only[1] not in data.word_index  # no vector: unknown
    matrix = data.word_vector_matrix
    assert matrix.shape == (data.num_words, 3)
    torch.testing.assert_close(matrix[data.word_index[some_train[1]]], torch.tensor([1.0, 0.5, -1.0]))
    assert data.summary()["word_vectors"]["train_words_found"] == 3
    sentence = next(i for i, s in enumerate(data.splits["train"].texts) if any(w != w.lower() for w in s))
    tokens = data.splits["train"].texts[sentence]
    instance = next(i for i, inst in enumerate(data.splits["train"].instances) if inst.texts == (sentence,))
    item = data.splits["train"][instance]
    assert item["words"][0] == [data.word_index[w.lower()] for w in tokens]  # looked up in lowercase
    assert item["chars"][0][0][0] == data.char_index[tokens[0][0]]  # the characters keep their case


def test_caches_are_built_on_the_trainers_device(tmp_path, monkeypatch):
    torch.manual_seed(0)
    bilm = BiLM(BiLMConfig.preset("tiny", cell_dim=16, projection_dim=8, filters=[[1, 8], [2, 8]], num_samples=0))
    export = save_export(tmp_path / "export", bilm)
    data = TaskDataModule("sentiment_sst5", data_root=FIXTURES, elmo=str(export), cache_dir=str(tmp_path / "cache"))
    assert data.cache_device() == torch.device("cpu")  # no trainer attached: the CPU
    asked: list[torch.device] = []
    real_build = task_datamodule.build_activation_cache

    def spy_build(*args, device, **kwargs):  # record the device, build on the CPU (no GPU here)
        asked.append(torch.device(device))
        return real_build(*args, device="cpu", **kwargs)

    monkeypatch.setattr(task_datamodule, "build_activation_cache", spy_build)
    data.trainer = SimpleNamespace(strategy=SimpleNamespace(root_device=torch.device("cuda", 1)))
    data.setup("fit")
    assert asked == [torch.device("cuda", 1)] * 2  # train and validation, on the trainer's root device
