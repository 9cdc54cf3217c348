"""The published ELMo format (``options.json`` + ``weights.hdf5`` of allenai/bilm-tf), read and written.

Datasets, with F = sum of filter counts, D char dim, P projection, H cell size (PAPER.md)::

    char_embed                                      (261, D)       we prepend the zero "no token" row
    CNN/W_cnn_{i}, CNN/b_cnn_{i}                     (1, w, D, n), (n,)
    CNN_high_{k}/W_carry, b_carry                    (F, F), (F,)   TF's "carry" gate multiplies the transform:
    CNN_high_{k}/W_transform, b_transform            (F, F), (F,)   y = g * relu(x W_t + b_t) + (1 - g) * x
    CNN_proj/W_proj, b_proj                          (F, P), (P,)   absent when F == P (bilm-tf skips it)
    RNN_{0 fwd|1 bwd}/RNN/MultiRNNCell/Cell{l}/LSTMCell/
        W_0                                          (P + P, 4H)    [input; recurrent] x gates i, j, f, o
        B                                            (4H,)          TF adds 1.0 to the f block at run time
        W_P_0                                        (H, P)         absent when P == H (no projection)

The conversion, both ways: TF multiplies ``x W`` with W laid out [in, out], PyTorch ``W x`` with
[out, in], so every matrix is transposed; conv kernels [1, w, D, n] become [n, D, w]; the gate
blocks i, j, f, o become PyTorch's i, f, g, o (j is the candidate g); the forget bias of 1.0 that
TF adds at run time is stored inside our bias; ``W_carry`` is our ``Highway.gate`` and
``W_transform`` our ``Highway.transform``. The softmax is not part of the format.

Writing stores ``b_f - 1.0`` in float32, as every reader adds 1.0 back. That subtraction is exact
for every forget bias >= 0.5 (the usual case: they start at 1.0, and any bias read from a published
file is >= 0.5 unless the file's value is below -0.5); a smaller one is rounded to the float32 grid of
``b_f - 1``, moving it by at most 2^-24 * |b_f - 1| (6e-8 for b_f in [-1, 0.5)), and
:func:`save_bilm_tf` logs how many moved. Every other value round-trips bit for bit. No float32
format can do better: TF itself computes ``sigmoid(z + B + 1.0)`` in float32.
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

from elmo_pipeline.models.bilm import BiLM, check_finite
from elmo_pipeline.models.config import BiLMConfig
from elmo_pipeline.text.chars import MAX_CHARS, NUM_CHARS
from elmo_pipeline.text.vocab import Vocabulary

log = logging.getLogger(__name__)

OPTIONS_FILE = "options.json"
WEIGHTS_FILE = "weights.hdf5"
TF_FORGET_BIAS = 1.0  # tf.nn.rnn_cell.LSTMCell's default forget_bias, added at run time
FILE_CHARS = NUM_CHARS - 1  # char_embed rows in the file: without our zero "no token" row
_TORCH_FROM_TF_GATES = (0, 2, 1, 3)  # TF blocks i, j, f, o -> PyTorch i, f, g(=j), o; its own inverse


def _cell(direction: int, layer: int) -> str:
    return f"RNN_{direction}/RNN/MultiRNNCell/Cell{layer}/LSTMCell/"


# ---------------------------------------------------------------------------------------------- options


def options_to_config(options: dict[str, Any], source: str | Path = OPTIONS_FILE) -> BiLMConfig:
    """The :class:`BiLMConfig` of a published ``options.json`` (an encoder only: ``vocab_size=0``).

    Args:
        options: the parsed JSON.
        source: the file name, for error messages.
    """

    def need(section: dict[str, Any], key: str, where: str) -> Any:
        if not isinstance(section, dict):
            raise ValueError(f"{source}: option {where.rstrip('.')} must be a JSON object, got {section!r}")
        if key not in section:
            raise ValueError(f"{source}: option {where}{key} is missing; an ELMo options.json must set it")
        return section[key]

    def integer(value: Any, name: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{source}: option {name} must be a whole number, got {value!r} ({type(value).__name__})")
        return value

    def number(value: Any, name: str) -> float | None:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise ValueError(f"{source}: option {name} must be a finite number or null, got {value!r}")
        return float(value)

    def flag(value: Any, name: str) -> bool:
        if not isinstance(value, bool):
            raise ValueError(f"{source}: option {name} must be true or false, got {value!r}")
        return value

    lstm = need(options, "lstm", "")
    cnn = need(options, "char_cnn", "")
    P = integer(need(lstm, "projection_dim", "lstm."), "lstm.projection_dim")
    H = integer(need(lstm, "dim", "lstm."), "lstm.dim")
    n_chars = integer(need(cnn, "n_characters", "char_cnn."), "char_cnn.n_characters")
    if n_chars not in (FILE_CHARS, NUM_CHARS):
        raise ValueError(f"{source}: char_cnn.n_characters is {n_chars}; ELMo models have 262 (261 while training)")
    max_chars = integer(need(cnn, "max_characters_per_token", "char_cnn."), "char_cnn.max_characters_per_token")
    if max_chars != MAX_CHARS:
        raise ValueError(
            f"{source}: char_cnn.max_characters_per_token is {max_chars}; elmo-pipeline's character ids have "
            f"{MAX_CHARS} per token (every published ELMo model uses {MAX_CHARS})"
        )
    activation = need(cnn, "activation", "char_cnn.")
    if activation not in ("relu", "tanh"):
        raise ValueError(f"{source}: char_cnn.activation must be 'relu' or 'tanh', got {activation!r}")
    if P > H:
        raise ValueError(
            f"{source}: lstm.projection_dim {P} > lstm.dim {H}; bilm-tf then runs its LSTMs without a projection "
            "and the layers have different sizes, which this biLM cannot represent"
        )
    cell_clip = number(lstm.get("cell_clip"), "lstm.cell_clip")
    proj_clip = number(lstm.get("proj_clip"), "lstm.proj_clip")
    if P == H and proj_clip is not None:
        log.info("%s: projection_dim == dim, so bilm-tf has no projection and ignores proj_clip; so do we", source)
        proj_clip = None
    raw_filters = need(cnn, "filters", "char_cnn.")
    if not isinstance(raw_filters, list) or not all(isinstance(f, list) and len(f) == 2 for f in raw_filters):
        raise ValueError(
            f"{source}: option char_cnn.filters must be a list of [width, count] pairs, got {raw_filters!r}"
        )
    filters = [[integer(w, "char_cnn.filters"), integer(n, "char_cnn.filters")] for w, n in raw_filters]
    dropout = number(options.get("dropout", BiLMConfig.dropout), "dropout")
    return BiLMConfig(
        vocab_size=0,
        char_embed_dim=integer(
            need(need(cnn, "embedding", "char_cnn."), "dim", "char_cnn.embedding."), "char_cnn.embedding.dim"
        ),
        filters=filters,
        num_highway=integer(cnn.get("n_highway") or 0, "char_cnn.n_highway"),
        activation=activation,
        projection_dim=P,
        cell_dim=H,
        num_layers=integer(lstm.get("n_layers", 1), "lstm.n_layers"),
        cell_clip=cell_clip,
        proj_clip=proj_clip,
        use_skip_connections=flag(lstm.get("use_skip_connections", False), "lstm.use_skip_connections"),
        dropout=BiLMConfig.dropout if dropout is None else dropout,
        num_samples=0,
        num_chars=NUM_CHARS,
        max_chars_per_token=MAX_CHARS,
    )


def config_to_options(config: BiLMConfig) -> dict[str, Any]:
    """The ``options.json`` content (inference form, ``n_characters`` 262) of a biLM configuration."""
    return {
        "lstm": {
            "use_skip_connections": config.use_skip_connections,
            "projection_dim": config.projection_dim,
            "cell_clip": config.cell_clip,
            "proj_clip": config.proj_clip,
            "dim": config.cell_dim,
            "n_layers": config.num_layers,
        },
        "char_cnn": {
            "activation": config.activation,
            "filters": [list(f) for f in config.filters],
            "n_highway": config.num_highway,
            "embedding": {"dim": config.char_embed_dim},
            "n_characters": NUM_CHARS,
            "max_characters_per_token": config.max_chars_per_token,
        },
        "bidirectional": True,
        "dropout": config.dropout,
    }


def read_options(path: str | Path) -> BiLMConfig:
    """Parse a published ``options.json`` into a :class:`BiLMConfig`."""
    path = Path(path)
    try:
        options = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: options file not found (--options)") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}:{err.lineno}: not valid JSON ({err.msg}); pass ELMo's options.json") from None
    if not isinstance(options, dict):
        raise ValueError(f"{path}: expected a JSON object with 'lstm' and 'char_cnn', got {type(options).__name__}")
    return options_to_config(options, path)


# ---------------------------------------------------------------------------------------------- shapes


def expected_shapes(config: BiLMConfig) -> dict[str, tuple[int, ...]]:
    """Every dataset of the file for ``config`` and its shape (the optional ones too: :func:`optional_datasets`)."""
    D, P, H = config.char_embed_dim, config.projection_dim, config.cell_dim
    F = sum(n for _, n in config.filters)
    shapes: dict[str, tuple[int, ...]] = {"char_embed": (FILE_CHARS, D)}
    for i, (width, count) in enumerate(config.filters):
        shapes[f"CNN/W_cnn_{i}"] = (1, width, D, count)
        shapes[f"CNN/b_cnn_{i}"] = (count,)
    for k in range(config.num_highway):
        for kind in ("transform", "carry"):
            shapes[f"CNN_high_{k}/W_{kind}"] = (F, F)
            shapes[f"CNN_high_{k}/b_{kind}"] = (F,)
    shapes["CNN_proj/W_proj"] = (F, P)
    shapes["CNN_proj/b_proj"] = (P,)
    for direction in (0, 1):
        for layer in range(config.num_layers):
            cell = _cell(direction, layer)
            shapes[cell + "W_0"] = (P + P, 4 * H)
            shapes[cell + "B"] = (4 * H,)
            shapes[cell + "W_P_0"] = (H, P)
    return shapes


def optional_datasets(config: BiLMConfig) -> set[str]:
    """Datasets bilm-tf leaves out: the CNN projection when F == P, the LSTM projection when P == H."""
    optional = set()
    if sum(n for _, n in config.filters) == config.projection_dim:
        optional |= {"CNN_proj/W_proj", "CNN_proj/b_proj"}
    if config.projection_dim == config.cell_dim:
        optional |= {_cell(d, l) + "W_P_0" for d in (0, 1) for l in range(config.num_layers)}
    return optional


# ---------------------------------------------------------------------------------------------- conversion


def _gates(matrix: np.ndarray, H: int) -> np.ndarray:
    """Reorder the four H-row gate blocks of (4H, ...) between TF's i, j, f, o and PyTorch's i, f, g, o."""
    return np.concatenate([matrix[b * H : (b + 1) * H] for b in _TORCH_FROM_TF_GATES], axis=0)


def tf_to_state_dict(arrays: dict[str, np.ndarray], config: BiLMConfig) -> dict[str, torch.Tensor]:
    """Our BiLM ``state_dict`` (no softmax) from the file's arrays; missing optional datasets become identities."""
    P, H = config.projection_dim, config.cell_dim
    F = sum(n for _, n in config.filters)
    f32 = np.float32
    state: dict[str, np.ndarray] = {}
    embed = np.zeros((NUM_CHARS, config.char_embed_dim), dtype=f32)  # (262, D)
    embed[1:] = arrays["char_embed"]
    state["token_encoder.embedding.weight"] = embed
    for i in range(len(config.filters)):
        kernel = arrays[f"CNN/W_cnn_{i}"][0]  # (w, D, n)
        state[f"token_encoder.convs.{i}.weight"] = kernel.transpose(2, 1, 0)  # (n, D, w)
        state[f"token_encoder.convs.{i}.bias"] = arrays[f"CNN/b_cnn_{i}"]
    for k in range(config.num_highway):
        high = f"CNN_high_{k}/"
        state[f"token_encoder.highway.transform.{k}.weight"] = arrays[high + "W_transform"].T  # (F, F) [out, in]
        state[f"token_encoder.highway.transform.{k}.bias"] = arrays[high + "b_transform"]
        state[f"token_encoder.highway.gate.{k}.weight"] = arrays[high + "W_carry"].T  # (F, F)
        state[f"token_encoder.highway.gate.{k}.bias"] = arrays[high + "b_carry"]
    if "CNN_proj/W_proj" in arrays:
        state["token_encoder.projection.weight"] = arrays["CNN_proj/W_proj"].T  # (P, F)
        state["token_encoder.projection.bias"] = arrays["CNN_proj/b_proj"]
    else:  # bilm-tf has no projection when F == P
        state["token_encoder.projection.weight"] = np.eye(P, F, dtype=f32)
        state["token_encoder.projection.bias"] = np.zeros(P, dtype=f32)
    for direction, stack in ((0, "forward_layers"), (1, "backward_layers")):
        for layer in range(config.num_layers):
            cell, ours = _cell(direction, layer), f"{stack}.{layer}."
            weight = _gates(arrays[cell + "W_0"].T, H)  # (4H, P + P), PyTorch gate order
            state[ours + "weight_ih"] = weight[:, :P]  # (4H, P) the input rows come first in W_0
            state[ours + "weight_hh"] = weight[:, P:]  # (4H, P)
            bias = arrays[cell + "B"].astype(f32).copy()  # (4H,)
            bias[2 * H : 3 * H] += f32(TF_FORGET_BIAS)  # TF's f block, before the reorder
            state[ours + "bias"] = _gates(bias, H)
            if cell + "W_P_0" in arrays:
                state[ours + "weight_hr"] = arrays[cell + "W_P_0"].T  # (P, H)
            else:  # bilm-tf has no projection when P == H
                state[ours + "weight_hr"] = np.eye(P, H, dtype=f32)
    return {name: torch.from_numpy(np.ascontiguousarray(value, dtype=f32)) for name, value in state.items()}


def state_dict_to_tf(bilm: BiLM) -> dict[str, np.ndarray]:
    """The file's float32 arrays for ``bilm`` (the softmax, if any, is left out)."""
    config = bilm.config
    cell = getattr(config, "cell", "lstmp")
    if cell != "lstmp":
        raise ValueError(
            f"the published ELMo format holds projected LSTM cells only; this biLM uses cell {cell!r} "
            "(--model.bilm.cell); keep it as an export folder (save_export) instead"
        )
    H = config.cell_dim
    sd = {name: value.detach().cpu().float().numpy() for name, value in bilm.state_dict().items()}
    arrays: dict[str, np.ndarray] = {"char_embed": sd["token_encoder.embedding.weight"][1:]}  # (261, D)
    for i in range(len(config.filters)):
        arrays[f"CNN/W_cnn_{i}"] = sd[f"token_encoder.convs.{i}.weight"].transpose(2, 1, 0)[None]  # (1, w, D, n)
        arrays[f"CNN/b_cnn_{i}"] = sd[f"token_encoder.convs.{i}.bias"]
    for k in range(config.num_highway):
        high = f"CNN_high_{k}/"
        arrays[high + "W_transform"] = sd[f"token_encoder.highway.transform.{k}.weight"].T  # (F, F) [in, out]
        arrays[high + "b_transform"] = sd[f"token_encoder.highway.transform.{k}.bias"]
        arrays[high + "W_carry"] = sd[f"token_encoder.highway.gate.{k}.weight"].T
        arrays[high + "b_carry"] = sd[f"token_encoder.highway.gate.{k}.bias"]
    arrays["CNN_proj/W_proj"] = sd["token_encoder.projection.weight"].T  # (F, P)
    arrays["CNN_proj/b_proj"] = sd["token_encoder.projection.bias"]
    inexact, worst = 0, 0.0
    for direction, stack in ((0, "forward_layers"), (1, "backward_layers")):
        for layer in range(config.num_layers):
            cell, ours = _cell(direction, layer), f"{stack}.{layer}."
            weight = np.concatenate([sd[ours + "weight_ih"], sd[ours + "weight_hh"]], axis=1)  # (4H, P + P)
            arrays[cell + "W_0"] = _gates(weight, H).T  # (P + P, 4H), TF gate order
            bias = _gates(sd[ours + "bias"], H).copy()  # (4H,), TF gate order
            forget = bias[2 * H : 3 * H]  # (H,) what TF must compute
            stored = forget - np.float32(TF_FORGET_BIAS)  # (H,) float32, as readers add 1.0 back
            back = stored + np.float32(TF_FORGET_BIAS)
            inexact += int((back != forget).sum())
            worst = max(worst, float(np.abs(back - forget).max(initial=0.0)))
            bias[2 * H : 3 * H] = stored
            arrays[cell + "B"] = bias
            arrays[cell + "W_P_0"] = sd[ours + "weight_hr"].T  # (H, P)
    if inexact:
        log.info(
            "%d forget-gate biases below 0.5 are not exactly representable as float32 (b - 1.0); they move by at "
            "most %.2g when read back",
            inexact,
            worst,
        )
    return {name: np.ascontiguousarray(value, dtype=np.float32) for name, value in arrays.items()}


# ---------------------------------------------------------------------------------------------- files


def _datasets(handle: h5py.File) -> dict[str, h5py.Dataset]:
    found: dict[str, h5py.Dataset] = {}
    handle.visititems(lambda name, obj: found.__setitem__(name, obj) if isinstance(obj, h5py.Dataset) else None)
    return found


def read_weights(
    weight_file: str | Path, config: BiLMConfig, options_file: str | Path = OPTIONS_FILE
) -> dict[str, np.ndarray]:
    """The arrays of ``weights.hdf5`` checked against ``config``.

    Raises:
        ValueError: naming every dataset that is missing or has the wrong shape (expected and found).
    """
    weight_file = Path(weight_file)
    if not weight_file.is_file():
        raise FileNotFoundError(f"{weight_file}: weight file not found (--weights)")
    expected, optional = expected_shapes(config), optional_datasets(config)
    problems, arrays = [], {}
    try:
        handle = h5py.File(weight_file, "r")
    except OSError as err:
        raise ValueError(f"{weight_file}: not an HDF5 file ({err}); pass ELMo's weights.hdf5 (--weights)") from None
    with handle:
        found = _datasets(handle)
        for name, shape in expected.items():
            if name not in found:
                if name not in optional:
                    problems.append(f"dataset '{name}' is missing (expected shape {shape})")
                continue
            if tuple(found[name].shape) != shape:
                problems.append(f"dataset '{name}': expected shape {shape}, found {tuple(found[name].shape)}")
                continue
            arrays[name] = found[name][...].astype(np.float32)
            check_finite(arrays[name], f"{weight_file}: dataset '{name}'")
        unused = sorted(set(found) - set(expected))
    if problems:
        raise ValueError(
            f"{weight_file}: the weights do not fit {options_file}:\n  "
            + "\n  ".join(problems)
            + "\nCheck that options.json and weights.hdf5 come from the same model."
        )
    if len([n for n in optional if n.startswith("CNN_proj") and n in arrays]) == 1:
        raise ValueError(f"{weight_file}: CNN_proj must hold both W_proj and b_proj")
    if unused:
        log.warning(
            "%s: ignoring %d datasets that %s does not use: %s", weight_file, len(unused), options_file, unused[:8]
        )
    return arrays


def load_bilm_tf(options_file: str | Path, weight_file: str | Path) -> BiLM:
    """A :class:`BiLM` (encoder only, eval mode) from the published ``options.json`` and ``weights.hdf5``."""
    config = read_options(options_file)
    arrays = read_weights(weight_file, config, options_file)
    bilm = BiLM(config)
    bilm.load_state_dict(tf_to_state_dict(arrays, config), strict=True)
    log.info("loaded ELMo weights from %s (%s)", weight_file, options_file)
    return bilm.eval()


def _compatibility_warnings(bilm: BiLM) -> None:
    config, state = bilm.config, bilm.state_dict()
    F, P, H = sum(n for _, n in config.filters), config.projection_dim, config.cell_dim
    if F < P:
        log.warning(
            "bilm-tf requires n_filters (%d) > projection_dim (%d); only AllenNLP-style readers will load this", F, P
        )
    elif F == P:
        log.warning("n_filters == projection_dim: bilm-tf skips CNN_proj and will compute without our projection")
    if P > H:
        log.warning("projection_dim (%d) > dim (%d): bilm-tf will run its LSTMs without a projection", P, H)
    elif P == H and (
        config.proj_clip is not None or not torch.equal(state["forward_layers.0.weight_hr"], torch.eye(P))
    ):
        log.warning("projection_dim == dim: bilm-tf skips W_P_0 and proj_clip and will compute differently")
    if not config.use_skip_connections:
        log.warning("use_skip_connections is false: AllenNLP's reader refuses such models (bilm-tf reads them)")


def save_bilm_tf(
    bilm: BiLM,
    directory: str | Path,
    vocab: Vocabulary | None = None,
    options_name: str = OPTIONS_FILE,
    weights_name: str = WEIGHTS_FILE,
) -> tuple[Path, Path]:
    """Write ``bilm`` in the published format, readable by bilm-tf, AllenNLP and :func:`load_bilm_tf`.

    Args:
        bilm: the model (its softmax, if any, is not part of the format and is left out).
        directory: created if needed.
        vocab: also write the vocabulary as ``vocab.txt`` (bilm-tf's one-word-per-line format).
        options_name: file name of the options.
        weights_name: file name of the weights.

    Returns:
        The paths of the options and the weight file.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    arrays = state_dict_to_tf(bilm)
    _compatibility_warnings(bilm)
    options_path, weights_path = directory / options_name, directory / weights_name
    tmp = weights_path.with_name(weights_path.name + f".tmp{os.getpid()}")
    try:
        with h5py.File(tmp, "w") as handle:
            for name, value in arrays.items():
                handle.create_dataset(name, data=value)
        tmp.replace(weights_path)
    finally:
        tmp.unlink(missing_ok=True)
    options_path.write_text(json.dumps(config_to_options(bilm.config), indent=2) + "\n", encoding="utf-8")
    if vocab is not None:
        vocab.save(directory / "vocab.txt")
    if bilm.softmax is not None:
        log.info(
            "the softmax (%d words) is not part of the published format and was not written", bilm.softmax.vocab_size
        )
    return options_path, weights_path
