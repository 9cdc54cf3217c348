"""The biLM's configuration and its named presets (PAPER.md, "The biLM")."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from elmo_pipeline.modules.cells import CELLS

SOFTMAXES = ("sampled", "full", "adaptive")
# every field declares whether it can change what an eval-mode biLM computes for its layers (the
# activation cache's key is built from the fields that can); a field without the mark is an error
LAYERS = {"layers": True}
NOT_LAYERS = {"layers": False}
ORIGINAL_FILTERS = [[1, 32], [2, 32], [3, 64], [4, 128], [5, 256], [6, 512], [7, 1024]]


@dataclass
class BiLMConfig:
    """Sizes and switches of an ELMo biLM.

    Attributes:
        vocab_size: rows of the softmax (0: no softmax, an encoder only, as in the published files).
        char_embed_dim: size of the character embedding.
        filters: ``[[width, count], ...]`` of the character CNN.
        num_highway: highway layers after the character CNN.
        activation: character CNN activation, ``relu`` or ``tanh``.
        projection_dim: P, the token vector size and every LSTM layer's output size.
        cell_dim: H, the LSTM cell size.
        num_layers: LSTM layers per direction.
        cell_clip: clip LSTM cell states to +-this (null: no clipping).
        proj_clip: clip LSTM projected outputs to +-this (null: no clipping).
        use_skip_connections: add each layer's input to its output from the second layer on.
        dropout: dropout on every LSTM layer's input and on the softmax input, while training.
        num_samples: negatives of the sampled softmax in training (0: full softmax).
        softmax: the LM softmax: ``sampled`` (bilm-tf's: sampled in training with ``num_samples``
            negatives, full in evaluation), ``full`` (always the full softmax) or ``adaptive``
            (Grave et al. 2017: exact and normalised, cheap enough to train with; see
            elmo_pipeline/modules/softmax.py).
        adaptive_cutoffs: word ids where the adaptive softmax's tail clusters start.
        adaptive_div_value: each adaptive tail cluster's projection is this many times narrower.
        fast: the fast training step: the character CNN runs once per distinct token of a batch,
            and the clipped LSTMP runs a hand-written forward and backward (false: the plain,
            autograd-only path; same numbers, slower; kept for benchmarks and tests).
        compile_recurrence: run the clipped LSTMP (and any LSTMP under bf16 autocast) through
            ``torch.compile`` (CUDA graphs on a GPU, where the eager step is launch-bound); each
            length, padded to a multiple of 8, compiles once. Unclipped fp32 layers use the fused
            kernel (cuDNN on a GPU) either way. For GPUs: on a CPU the fast path is the quicker.
        parallel_directions: on a CPU with two or more threads, run the forward and backward
            directions' LSTMP layers of each depth side by side, each on half of the threads, forward
            and backward (the fast backend only; the same numbers as one after the other). Off by
            default: it made the one-hour recipe's bf16 step (B 64, H 512) 1.02-1.14x faster on 2
            vCPUs, and the tiny preset's step (B 32, H 256) slower (docs/benchmarks.md).
        num_chars: rows of the character embedding (262 = 261 ids + the zero row).
        max_chars_per_token: characters per token (50).
        cell: the recurrent cell of every layer: ``lstmp`` (ELMo's projected LSTM, cell_dim H projected
            to projection_dim P, clipped by cell_clip/proj_clip), or ``lstm``, ``coupled``, ``peephole``,
            ``gru``, ``layernorm_lstm`` (no projection: state and output are P wide; cell_dim,
            cell_clip and proj_clip do not apply). See elmo_pipeline/modules/cells.py.
    """

    vocab_size: int = field(default=0, metadata=NOT_LAYERS)
    char_embed_dim: int = field(default=16, metadata=LAYERS)
    filters: list[list[int]] = field(default_factory=lambda: [list(f) for f in ORIGINAL_FILTERS], metadata=LAYERS)
    num_highway: int = field(default=2, metadata=LAYERS)
    activation: str = field(default="relu", metadata=LAYERS)
    projection_dim: int = field(default=512, metadata=LAYERS)
    cell_dim: int = field(default=4096, metadata=LAYERS)
    num_layers: int = field(default=2, metadata=LAYERS)
    cell_clip: float | None = field(default=3.0, metadata=LAYERS)
    proj_clip: float | None = field(default=3.0, metadata=LAYERS)
    use_skip_connections: bool = field(default=True, metadata=LAYERS)
    dropout: float = field(default=0.1, metadata=NOT_LAYERS)
    num_samples: int = field(default=8192, metadata=NOT_LAYERS)
    num_chars: int = field(default=262, metadata=LAYERS)
    max_chars_per_token: int = field(default=50, metadata=LAYERS)
    cell: str = field(default="lstmp", metadata=LAYERS)
    softmax: str = field(default="sampled", metadata=NOT_LAYERS)
    adaptive_cutoffs: list[int] = field(default_factory=lambda: [2000, 10000], metadata=NOT_LAYERS)
    adaptive_div_value: float = field(default=4.0, metadata=NOT_LAYERS)
    fast: bool = field(default=True, metadata=NOT_LAYERS)
    compile_recurrence: bool = field(default=False, metadata=NOT_LAYERS)
    parallel_directions: bool = field(default=False, metadata=NOT_LAYERS)

    def __post_init__(self) -> None:
        for name in ("projection_dim", "cell_dim", "num_layers", "char_embed_dim"):
            if getattr(self, name) < 1:
                raise ValueError(
                    f"BiLMConfig: {name} must be positive, got {getattr(self, name)} (--model.bilm.{name})"
                )
        if not self.filters or any(len(f) != 2 or min(f) < 1 for f in self.filters):
            raise ValueError(f"BiLMConfig: filters must be a list of [width, count] pairs, got {self.filters}")
        if self.max_chars_per_token < max(w for w, _ in self.filters):
            raise ValueError("BiLMConfig: a filter is wider than max_chars_per_token")
        if self.softmax not in SOFTMAXES:
            raise ValueError(
                f"BiLMConfig: unknown softmax {self.softmax!r}; choose one of {list(SOFTMAXES)} (--model.bilm.softmax)"
            )
        if self.cell not in CELLS:
            raise ValueError(f"BiLMConfig: unknown cell {self.cell!r}; choose one of {list(CELLS)} (--model.bilm.cell)")

    @classmethod
    def layer_fields(cls) -> frozenset[str]:
        """The fields that can change the layers an eval-mode biLM computes (declared on each field)."""
        unmarked = [f.name for f in dataclasses.fields(cls) if "layers" not in f.metadata]
        if unmarked:
            raise TypeError(f"BiLMConfig: fields {unmarked} must declare metadata=LAYERS or NOT_LAYERS")
        return frozenset(f.name for f in dataclasses.fields(cls) if f.metadata["layers"])

    def residual(self, layer: int) -> bool:
        """Whether layer ``layer`` (0-based) adds its input to its output: from the second layer on, with skips.

        The one statement of the rule; every runner of the stack (training, streaming, export, the
        target LM) asks it.
        """
        return layer > 0 and self.use_skip_connections

    @property
    def output_dim(self) -> int:
        """Size of every ELMo layer, ``2 * projection_dim``."""
        return 2 * self.projection_dim

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BiLMConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"BiLMConfig: unknown fields {unknown}; known fields are {sorted(known)}")
        return cls(**data)

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> BiLMConfig:
        """``tiny`` (CPU, minutes), ``small`` (published Small, 13.6M) or ``original`` (93.6M)."""
        if name not in PRESETS:
            raise ValueError(f"BiLMConfig: unknown preset {name!r}; choose one of {sorted(PRESETS)}")
        return cls(**{**PRESETS[name], **overrides})


PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(
        filters=[[1, 16], [2, 16], [3, 32], [4, 64]],
        num_highway=1,
        projection_dim=64,
        cell_dim=256,
        num_samples=512,
    ),
    "small": dict(num_highway=1, projection_dim=128, cell_dim=1024),
    "original": dict(),
}
