"""An on-disk cache of a frozen biLM's layers, so that downstream epochs never rerun the biLM (DESIGN.md).

A frozen biLM maps a sentence to the same L + 1 layers on every epoch (it is stateless and runs in
eval mode), so we run it once over a dataset and keep every layer of every token::

    <root>/<bilm hash>-<data hash>[-boundaries]/
        activations.npy   (N tokens, L + 1, 2P) float16, read memory-mapped
        index.npy         (S sentences, 2) int64: offset of the sentence's first token, its length
        meta.json         hashes, sizes, format version

The folder name is a hash of the biLM's configuration and weights (the softmax excluded: it cannot
change a layer) and of the exact token lists, so a different biLM or a different dataset never
reads a stale cache: it gets a folder of its own. A cache is written to a temporary folder and
renamed into place when complete, so a crashed run leaves nothing that looks valid.

Typical use, with :class:`elmo_pipeline.models.elmo.Elmo` mixing the cached layers::

    cache = build_activation_cache(bilm, sentences, "cache/")
    layers, mask = cache.batch([0, 5, 7])      # L + 1 tensors (B, T, 2P) float32, (B, T) mask
    representations, mask = elmo.mix(layers, mask)
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from elmo_pipeline.models.bilm import BiLM
from elmo_pipeline.models.elmo import bilm_layers
from elmo_pipeline.models.streaming import StreamingBiLM
from elmo_pipeline.text.batching import length_sorted_batches

log = logging.getLogger(__name__)

CACHE_FORMAT = 1
# what the runner computes: part of every cache's key, so that caches from an older runner miss and rebuild.
# 2: 2026-12-02, the streaming runner honours use_skip_connections (version 1 always added the residual)
RUNNER_VERSION = 2


def bilm_fingerprint(bilm: BiLM) -> str:
    """sha256 of everything that decides the biLM's layers: its configuration and its non-softmax weights."""
    digest = hashlib.sha256()
    keep = bilm.config.layer_fields()  # each field declares whether it can change the layers
    config = {k: v for k, v in dataclasses.asdict(bilm.config).items() if k in keep}
    digest.update(json.dumps(config, sort_keys=True).encode())
    digest.update(f"runner {RUNNER_VERSION}".encode())
    for name, tensor in sorted(bilm.state_dict().items()):
        if name.startswith("softmax."):
            continue
        flat = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}|{flat.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(flat.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def data_fingerprint(sentences: Sequence[Sequence[str]]) -> str:
    """sha256 of the exact token lists (their order included); unambiguous for any token content."""
    digest = hashlib.sha256()
    for sentence in sentences:
        digest.update(len(sentence).to_bytes(8, "little"))
        for token in sentence:
            data = token.encode("utf-8")
            digest.update(len(data).to_bytes(8, "little"))
            digest.update(data)
    return digest.hexdigest()


def layer_rms(cache: ActivationCache, chunk: int = 65536) -> list[float]:
    """Root mean square of each layer over every token and feature of a cache: L + 1 values."""
    total = np.zeros(cache.num_layers, dtype=np.float64)
    for first in range(0, len(cache.activations), chunk):
        block = np.asarray(cache.activations[first : first + chunk], dtype=np.float64)  # (n, L+1, 2P)
        total += (block * block).sum(axis=(0, 2))
    count = max(len(cache.activations) * cache.dim, 1)
    return [float(x) for x in np.sqrt(total / count)]


def pad_activations(
    items: Sequence[torch.Tensor], dtype: torch.dtype = torch.float32
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Pad per-sentence activations into a batch.

    Args:
        items: B tensors (n_b, L + 1, 2P), as returned by ``ActivationCache[i]``.
        dtype: dtype of the returned layers.

    Returns:
        L + 1 tensors (B, T, 2P), zero at padded positions, and the (B, T) bool mask.
    """
    if not items:
        raise ValueError("pad_activations: got an empty batch")
    _, num_layers, dim = items[0].shape
    longest = max(item.shape[0] for item in items)
    batch = torch.zeros(len(items), longest, num_layers, dim, dtype=dtype)  # (B, T, L+1, 2P)
    mask = torch.zeros(len(items), longest, dtype=torch.bool)  # (B, T)
    for b, item in enumerate(items):
        batch[b, : item.shape[0]] = item.to(dtype)
        mask[b, : item.shape[0]] = True
    return list(batch.unbind(dim=2)), mask  # (L+1) x (B, T, 2P), (B, T)


class ActivationCache(torch.utils.data.Dataset):
    """A built cache, read memory-mapped; ``cache[i]`` is sentence i's (n_i, L + 1, 2P) float16 layers.

    Args:
        directory: a folder written by :func:`build_activation_cache`.
    """

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        meta_path = self.directory / "meta.json"
        if not meta_path.is_file():
            raise FileNotFoundError(
                f"{self.directory}: not an activation cache (no meta.json); build it with build_activation_cache"
            )
        self.meta = json.loads(meta_path.read_text())
        if self.meta.get("format") != CACHE_FORMAT:
            raise ValueError(
                f"{meta_path}: cache format {self.meta.get('format')}, this elmo-pipeline reads {CACHE_FORMAT}; "
                "delete the folder to rebuild"
            )
        self.index = np.load(self.directory / "index.npy")  # (S, 2) offset, length
        shape = (self.meta["num_tokens"], self.meta["num_layers"], self.meta["dim"])
        if self.meta["num_tokens"] == 0:  # numpy cannot memory-map an empty array
            self.activations = np.zeros(shape, dtype=np.float16)
        else:
            self.activations = np.load(self.directory / "activations.npy", mmap_mode="r")  # (N, L+1, 2P)
        if self.activations.shape != shape or self.index.shape != (self.meta["num_sentences"], 2):
            raise ValueError(f"{self.directory}: the cache files do not match meta.json; delete the folder to rebuild")

    @property
    def num_layers(self) -> int:
        return int(self.meta["num_layers"])

    @property
    def dim(self) -> int:
        return int(self.meta["dim"])

    @property
    def lengths(self) -> np.ndarray:
        return self.index[:, 1]

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> torch.Tensor:
        offset, length = self.index[i]
        return torch.from_numpy(np.array(self.activations[offset : offset + length]))  # (n, L+1, 2P) float16

    def batch(
        self, indices: Sequence[int], dtype: torch.dtype = torch.float32
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """L + 1 padded layers (B, T, 2P) and the (B, T) mask of the sentences ``indices``."""
        return pad_activations([self[i] for i in indices], dtype)

    @staticmethod
    def collate(items: Sequence[torch.Tensor]) -> tuple[list[torch.Tensor], torch.Tensor]:
        """``collate_fn`` for a DataLoader over the cache: float32 layers and the mask."""
        return pad_activations(items)


def build_activation_cache(
    bilm: BiLM,
    sentences: Sequence[Sequence[str]],
    root: str | Path,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    keep_sentence_boundaries: bool = False,
    progress: bool = False,
) -> ActivationCache:
    """Open the cache of ``bilm`` over ``sentences`` under ``root``, running the biLM once if it is not there yet.

    Args:
        bilm: the frozen biLM (run in eval mode, without gradients).
        sentences: the dataset, one list of tokens per sentence; cache index i is sentence i.
        root: folder that holds the caches of every biLM and dataset.
        batch_size: sentences per biLM call (sorted by length to limit padding).
        device: where the biLM runs while building (the finetuning data module passes its trainer's
            device); the biLM goes back to where it was afterwards. The files are the same on any
            device up to float tolerance (float32 math, stored as float16).
        keep_sentence_boundaries: cache the ``<S>``/``</S>`` positions too.
        progress: show a progress bar while building.

    Returns:
        The ActivationCache.
    """
    root = Path(root)
    bilm_hash, data_hash = bilm_fingerprint(bilm), data_fingerprint(sentences)
    name = f"{bilm_hash[:20]}-{data_hash[:20]}" + ("-boundaries" if keep_sentence_boundaries else "")
    directory = root / name
    if (directory / "meta.json").is_file():
        cache = ActivationCache(directory)
        if cache.meta.get("bilm_hash") == bilm_hash and cache.meta.get("data_hash") == data_hash:
            log.info("activation cache: reusing %s", directory)
            return cache
        raise ValueError(f"{directory}: the cache's hashes do not match its folder name; delete the folder to rebuild")
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".{name}.tmp{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        _write(
            bilm,
            sentences,
            tmp,
            batch_size,
            torch.device(device),
            keep_sentence_boundaries,
            progress,
            {"bilm_hash": bilm_hash, "data_hash": data_hash},
        )
        try:
            tmp.rename(directory)
        except OSError:  # another process finished the same cache first; theirs is identical
            if not (directory / "meta.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("activation cache: wrote %s", directory)
    return ActivationCache(directory)


def _layers(
    bilm: BiLM, runner: StreamingBiLM | None, batch: list[list[str]], keep_sentence_boundaries: bool
) -> list[np.ndarray]:
    """Each sentence's layers, float32 (n, L+1, 2P): on the streaming runner, or BiLM.forward for other cells."""
    if runner is not None:
        extra = 2 if keep_sentence_boundaries else 0
        shape = (bilm.config.num_layers + 1, bilm.config.output_dim)
        values = [np.empty((shape[0], len(s) + extra, shape[1]), dtype=np.float32) for s in batch]  # (L+1, n, 2P)
        runner.run(batch, values, "all", keep_sentence_boundaries)
        return [value.transpose(1, 0, 2) for value in values]
    layers, mask = bilm_layers(bilm, batch, keep_sentence_boundaries)
    stacked = torch.stack(layers, dim=2).float().cpu().numpy()  # (B, T, L+1, 2P)
    return [value[:n] for value, n in zip(stacked, mask.sum(dim=1).tolist(), strict=True)]


def _write(
    bilm: BiLM,
    sentences: Sequence[Sequence[str]],
    directory: Path,
    batch_size: int,
    device: torch.device,
    keep_sentence_boundaries: bool,
    progress: bool,
    hashes: dict[str, str],
) -> None:
    extra = 2 if keep_sentence_boundaries else 0
    lengths = np.array([len(s) + extra for s in sentences], dtype=np.int64)  # (S,)
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64) if len(lengths) else lengths
    num_layers, dim, total = bilm.config.num_layers + 1, bilm.config.output_dim, int(lengths.sum())
    path = directory / "activations.npy"
    if total:
        store = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=(total, num_layers, dim))
    else:
        np.save(path, np.zeros((0, num_layers, dim), dtype=np.float16))
    was_training = bilm.training
    home = next(bilm.parameters()).device
    bilm.to(device).eval()
    batches = list(length_sorted_batches(lengths.tolist(), batch_size)) if total else []
    runner = StreamingBiLM.for_bilm(bilm)  # the fast path of `embed`
    try:
        with torch.inference_mode():
            for chunk in tqdm(batches, desc="cache", disable=not progress):
                batch = [list(sentences[i]) for i in chunk]
                for i, value in zip(chunk, _layers(bilm, runner, batch, keep_sentence_boundaries), strict=True):
                    if not np.isfinite(value).all():  # NaN in, NaN out: the biLM's weights or input
                        raise ValueError(
                            f"activation cache: the biLM gives non-finite activations for sentence {int(i)}; check "
                            "the biLM's weights (every loader refuses NaN/Inf weights, so look at how it was built)"
                        )
                    half = value.astype(np.float16)  # (n, L+1, 2P)
                    if not np.isfinite(half).all():
                        raise ValueError("activation cache: a biLM activation does not fit in float16 (|x| > 65504)")
                    store[offsets[i] : offsets[i] + lengths[i]] = half
        if total:
            store.flush()
            del store
    finally:
        bilm.to(home).train(was_training)
    np.save(directory / "index.npy", np.stack([offsets, lengths], axis=1))  # (S, 2)
    meta = {
        "format": CACHE_FORMAT,
        **hashes,
        "num_sentences": len(sentences),
        "num_tokens": total,
        "num_layers": num_layers,
        "dim": dim,
        "dtype": "float16",
        "keep_sentence_boundaries": keep_sentence_boundaries,
        "bilm_config": bilm.config.to_dict(),
    }
    (directory / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
