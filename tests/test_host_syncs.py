"""How often a pretraining step stops the host to wait for the device.

On a GPU, an op whose result the host must read (``.item()``, ``float()``, ``bool()`` of a tensor: aten's
``_local_scalar_dense``) or whose output size depends on the data (``nonzero``, ``unique``, a boolean
mask) makes the CPU wait for every kernel queued before it, so the CPU can no longer run ahead of the
GPU. The same ops run on the CPU, so a dispatch mode counts them here without a GPU.
"""

from __future__ import annotations

import traceback
from collections import Counter

import lightning as L
import pytest
import torch
from tiny_models import quiet_trainer, tiny_config
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.data import DataLoader

from elmo_pipeline.data.lm import make_batch
from elmo_pipeline.models import BiLM
from elmo_pipeline.systems.pretrain import PretrainSystem
from elmo_pipeline.text import Vocabulary

aten = torch.ops.aten
# ops that wait for the device: a value read by the host, or an output whose size is the data's
SYNCING = {aten._local_scalar_dense.default, aten.nonzero.default, aten._unique2.default, aten.unique_dim.default}
SYNCING |= {aten.masked_select.default, aten.unique_consecutive.default}
READS = ("tolist", "cpu", "numpy")  # a copy to the host: on a GPU each waits for the device


def _in_optimizer() -> bool:
    """Whether the read is torch.optim's own: Adam's and Adagrad's step counters are host tensors even
    when the weights are on a GPU (``capturable=False``), so reading them does not wait for the device."""
    for frame in reversed(traceback.extract_stack(limit=12)):
        if "torch/optim/" in frame.filename:
            return True
        if frame.filename != __file__ and "/torch/" not in frame.filename:  # the first caller outside torch
            return False
    return False


class CountSyncs(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.counts: Counter[str] = Counter()

    def __enter__(self):
        # whole-tensor reads do not go through the dispatcher on the CPU: count the calls
        self._originals = {name: getattr(torch.Tensor, name) for name in READS}
        for name, original in self._originals.items():
            setattr(torch.Tensor, name, self._counting(name, original))
        return super().__enter__()

    def __exit__(self, *exc):
        for name, original in self._originals.items():
            setattr(torch.Tensor, name, original)
        return super().__exit__(*exc)

    def _counting(self, name, original):
        def read(tensor, *args, **kwargs):
            if not _in_optimizer():
                self.counts[f"Tensor.{name}"] += 1
            return original(tensor, *args, **kwargs)

        return read

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = str(func)
        if func in SYNCING and not _in_optimizer():
            self.counts[name] += 1
        elif func is aten.index.Tensor and any(
            i is not None and i.dtype == torch.bool for i in args[1]
        ):  # h[mask]: a nonzero inside
            self.counts["aten.index (boolean mask)"] += 1
        return func(*args, **kwargs)


class CountSteps(L.Callback):
    """Counts the syncing ops of each training step (batch start to batch end), from step ``first`` on."""

    def __init__(self, first: int) -> None:
        self.first, self.per_step, self.mode = first, [], None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx >= self.first:
            self.mode = CountSyncs()
            self.mode.__enter__()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.mode is not None:
            self.mode.__exit__(None, None, None)
            self.per_step.append(self.mode.counts)
            self.mode = None


def _count_step_syncs(tmp_path, softmax: str, device_path: bool) -> list[Counter[str]]:
    """The syncing ops of training steps 3-7 of a tiny biLM; ``device_path``: as it runs on a GPU."""
    sentences = ["the cat sat on the mat .".split(), "a dog ran far away from the big red barn".split()]
    vocab = Vocabulary.build(sentences)
    batch = make_batch(sentences, vocab)
    extra = {"adaptive_cutoffs": [6], "adaptive_div_value": 2.0} if softmax == "adaptive" else {}
    config = tiny_config(softmax=softmax, num_samples=8 if softmax == "sampled" else 0, **extra)
    system = PretrainSystem(config, vocab_size=len(vocab), optimizer="adam", lr=0.01)
    if device_path:  # what a GPU runs: no token dedup (torch.unique), every loss row scored, ids checked on the host
        system.bilm.token_encoder.dedup = False
        system.bilm.host_waits = False
    counter = CountSteps(first=3)
    trainer = quiet_trainer(tmp_path, max_steps=8, enable_progress_bar=True, log_every_n_steps=50, callbacks=[counter])
    trainer.fit(system, train_dataloaders=DataLoader([batch] * 8, batch_size=None))
    assert len(counter.per_step) == 5
    return counter.per_step


@pytest.mark.parametrize("softmax", ["sampled", "full", "adaptive"])
def test_a_training_step_waits_for_the_device_once(tmp_path, softmax):
    """One wait a step on a GPU: the divergence guard reads the loss and the gradient norm before the
    update (the adaptive softmax adds one per direction: its clusters' sizes are the data's).

    Before this test there were 44 (sampled softmax): a value read per parameter for the gradient norm
    (Lightning's ``grad_norm``), the target range checks, the token count, the loss and the target mask.
    """
    for counts in _count_step_syncs(tmp_path, softmax, device_path=True):
        allowed = {"Tensor.tolist": 1, "aten.nonzero.default": 2 if softmax == "adaptive" else 0}
        assert {k: v for k, v in counts.items() if v} == {k: v for k, v in allowed.items() if v}


def test_the_cpu_path_selects_rows_and_dedups_tokens(tmp_path):
    """On the CPU a wait costs nothing: the loss scores the target rows only and the CNN each distinct token."""
    for counts in _count_step_syncs(tmp_path, "sampled", device_path=False):
        assert counts == {
            "Tensor.tolist": 1,
            "aten._local_scalar_dense.default": 4,  # the target ids' range, min and max per direction
            "aten.unique_dim.default": 1,
            "aten.index (boolean mask)": 4,
        }


@pytest.mark.parametrize("softmax", ["sampled", "full", "adaptive"])
def test_the_masked_loss_is_the_selected_loss(softmax):
    """Scoring every row and masking the padding gives the loss and gradients of scoring the targets only."""
    sentences = ["the cat sat on the mat .".split(), "a dog ran".split(), []]
    vocab = Vocabulary.build(sentences)
    batches = [make_batch(sentences[:2], vocab), make_batch([], vocab)]  # uneven lengths; no target at all
    extra = {"adaptive_cutoffs": [6], "adaptive_div_value": 2.0} if softmax == "adaptive" else {}
    torch.manual_seed(0)
    bilm = BiLM(tiny_config(softmax=softmax, num_samples=0, vocab_size=len(vocab), **extra)).eval()
    for batch in batches:
        results = []
        for host_waits in (True, False):
            bilm.host_waits = host_waits
            bilm.zero_grad()
            out = bilm(batch["chars"], batch["forward_targets"], batch["backward_targets"], sampled=False)
            out.loss.backward()
            grads = [p.grad.clone() if p.grad is not None else None for p in bilm.parameters()]
            results.append((out.forward_loss.detach(), out.backward_loss.detach(), grads))
        (f1, b1, g1), (f2, b2, g2) = results
        torch.testing.assert_close(f1, f2)
        torch.testing.assert_close(b1, b2)
        for a, b in zip(g1, g2, strict=True):
            assert (a is None) == (b is None) or not (a if a is not None else b).any()
            if a is not None and b is not None:
                torch.testing.assert_close(a, b)
