"""Heads: each fits a tiny fixture; the Head protocol; padding never changes a prediction; no lightning."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from elmo_pipeline.data.task_datamodule import TaskDataModule
from elmo_pipeline.data.task_dataset import collate
from elmo_pipeline.metrics.span_f1 import SpanF1
from elmo_pipeline.modules.heads import ESIM, BiattentiveClassifier, CrfTagger, Head
from elmo_pipeline.modules.token_embedder import TokenEmbedder

FIXTURES = str(Path(__file__).parent / "fixtures" / "tasks")
SMALL = {
    "ner_conll2003": (CrfTagger, dict(hidden_size=32, num_layers=1, dropout=0.0)),
    "sentiment_sst5": (
        BiattentiveClassifier,
        dict(pre_encode_dim=32, hidden_size=32, integrator_size=32, output_hidden=32, dropout=0.0),
    ),
    "nli_snli": (ESIM, dict(hidden_size=32, projection_dim=32, inference_size=32, output_hidden=32, dropout=0.0)),
}


def _batch(task: str, n: int):
    data = TaskDataModule(task, data_root=FIXTURES, train_subtrees=False)
    items = [data.splits["train"][i] for i in range(n)]
    return data, collate(items)


def _head_on_fixture(task: str, n: int, dim: int, elmo_dim: int = 0):
    """From seed 0: the first ``n`` training examples of ``task``'s fixture (data module, batch), a TokenEmbedder
    (word dim and char filters ``dim``, char dim 8) and the task's small head on it, reading ``elmo_dim`` ELMo dims."""
    torch.manual_seed(0)
    data, batch = _batch(task, n)
    head_class, options = SMALL[task]
    embedder = TokenEmbedder(data.num_words, data.num_chars, word_dim=dim, char_dim=8, char_filters=dim)
    head = head_class(embedder.output_dim, data.labels, elmo_dim, **options)
    return data, batch, embedder, head


def _embed(embedder, batch):
    return [embedder(w, c) for w, c in zip(batch["words"], batch["chars"])]


@pytest.mark.parametrize("task", list(SMALL))
def test_each_head_fits_a_tiny_fixture(task):
    data, batch, embedder, head = _head_on_fixture(task, 16, dim=16)
    assert isinstance(head, Head)
    params = list(embedder.parameters()) + list(head.parameters())
    optimizer = torch.optim.Adam(params, lr=0.01)
    for _ in range(300):
        out = head(_embed(embedder, batch), batch["masks"], batch["labels"])
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        predictions = head.decode(out, batch["masks"])
        if task == "ner_conll2003":
            metric = SpanF1(data.labels)
            metric.update(predictions, batch["labels"].clamp(min=0), batch["masks"][0])
            fitted = metric.compute()["f1"].item() == 1.0
        else:
            fitted = bool((predictions == batch["labels"]).all())
        if fitted:
            break
    assert fitted, f"{type(head).__name__} did not fit 16 examples (loss {out.loss.item():.3f})"


@pytest.mark.parametrize("task", list(SMALL))
def test_padding_never_changes_a_prediction(task):
    elmo_dim = 4
    data, batch, embedder, head = _head_on_fixture(task, 6, dim=8, elmo_dim=elmo_dim)
    head.eval()
    torch.manual_seed(1)
    outputs = [torch.randn(*m.shape, elmo_dim) * m.unsqueeze(-1) for m in batch["masks"]]  # (B, T, E) ELMo_out
    with torch.no_grad():
        together = head(_embed(embedder, batch), batch["masks"], output_elmo=outputs).logits
        for b in range(6):
            alone_batch = collate([data.splits["train"][b]])
            T = [m.shape[1] for m in alone_batch["masks"]]
            alone_out = [o[b : b + 1, :t] for o, t in zip(outputs, T)]
            alone = head(_embed(embedder, alone_batch), alone_batch["masks"], output_elmo=alone_out).logits
            expected = together[b : b + 1, : T[0]] if task == "ner_conll2003" else together[b : b + 1]
            torch.testing.assert_close(alone, expected, atol=1e-5, rtol=1e-4)


def test_heads_and_metrics_import_without_lightning():
    from test_layering import BLOCK_LIGHTNING

    modules = [
        "elmo_pipeline.modules.crf",
        "elmo_pipeline.modules.token_embedder",
        "elmo_pipeline.modules.heads",
        "elmo_pipeline.modules.heads.tagger",
        "elmo_pipeline.modules.heads.bcn",
        "elmo_pipeline.modules.heads.esim",
        "elmo_pipeline.modules.heads.encoders",
        "elmo_pipeline.metrics.span_f1",
        "elmo_pipeline.tasks",
    ]
    proc = subprocess.run([sys.executable, "-c", BLOCK_LIGHTNING, *modules], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
