"""The published format (options.json + weights.hdf5), both ways, against an independent reference.

The writer and the numpy biLM below follow PAPER.md's description of the files and bilm-tf's
equations directly; they share no code with ``elmo_pipeline.interop`` or the model:

    chars   [258, bytes<=48, 259, 260...] + 1; <S>/</S> = [258, 256|257, 259, 260...] + 1
    token   x = proj(highway*(act(max_pos(conv(E[chars]) + b))))   highway: g = sig(x Wc + bc),
            y = g * relu(x Wt + bt) + (1 - g) * x;  no CNN_proj when n_filters == projection_dim
    LSTM    i, j, f, o = [x_t; h_{t-1}] W_0 + B;  c = sig(f + 1.0) c + sig(i) tanh(j), clipped;
            h = (sig(o) tanh(c)) W_P_0, clipped (no W_P_0 and no proj_clip when dim == projection_dim)
    stack   residual from the second layer on; the backward stack reads the reversed sentence
    output  [x; x], [h_fwd_l; h_bwd_l]
"""

from __future__ import annotations

import json
import logging

import h5py
import numpy as np
import pytest
import torch
from tiny_models import tiny_bilm as shared_tiny_bilm

from elmo_pipeline.commands.export import main as convert_main
from elmo_pipeline.interop import load_bilm_tf, read_options, save_bilm_tf
from elmo_pipeline.models import BiLM
from elmo_pipeline.models.elmo import bilm_layers
from elmo_pipeline.models.export_folder import save_export
from elmo_pipeline.models.source import load_bilm

SENTENCES = [["The", "cat", "sat", "on", "mats"], ["é"], ["x" * 60, "naïve", "ok"]]  # a >48-byte token too


# ------------------------------------------------------------------------------------ independent reference


def ref_char_ids(token: str) -> np.ndarray:
    if token == "<S>":
        raw = [258, 256, 259]
    elif token == "</S>":
        raw = [258, 257, 259]
    else:
        raw = [258, *token.encode("utf-8")[:48], 259]
    return np.array(raw + [260] * (50 - len(raw))) + 1  # (50,)


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def ref_token_layer(arrays: dict, options: dict, ids: np.ndarray) -> np.ndarray:
    cnn = options["char_cnn"]
    table = np.vstack([np.zeros((1, cnn["embedding"]["dim"])), arrays["char_embed"]])  # (262, D)
    x = table[ids]  # (n, 50, D)
    act = np.tanh if cnn["activation"] == "tanh" else (lambda v: np.maximum(v, 0.0))
    pooled = []
    for i, (width, _) in enumerate(cnn["filters"]):
        kernel = arrays[f"CNN/W_cnn_{i}"][0]  # (w, D, n)
        conv = (
            np.stack([sum(x[:, p + k] @ kernel[k] for k in range(width)) for p in range(50 - width + 1)], axis=1)
            + arrays[f"CNN/b_cnn_{i}"]
        )  # (n, positions, count)
        pooled.append(act(conv.max(axis=1)))  # bilm-tf: max-pool, then the activation
    h = np.concatenate(pooled, axis=-1)  # (n, F)
    for k in range(cnn.get("n_highway") or 0):
        high = f"CNN_high_{k}/"
        carry = sigmoid(h @ arrays[high + "W_carry"] + arrays[high + "b_carry"])
        transform = np.maximum(h @ arrays[high + "W_transform"] + arrays[high + "b_transform"], 0.0)
        h = carry * transform + (1.0 - carry) * h
    if "CNN_proj/W_proj" in arrays:
        h = h @ arrays["CNN_proj/W_proj"] + arrays["CNN_proj/b_proj"]
    return h  # (n, P)


def ref_lstm(arrays: dict, lstm: dict, cell: str, xs: np.ndarray, clips: dict) -> np.ndarray:
    kernel, bias = arrays[cell + "W_0"], arrays[cell + "B"]
    H = lstm["dim"]
    has_proj = cell + "W_P_0" in arrays
    h, c = np.zeros(lstm["projection_dim"] if has_proj else H), np.zeros(H)
    outputs = []
    for x in xs:
        z = np.concatenate([x, h]) @ kernel + bias  # (4H,)
        i, j, f, o = z[:H], z[H : 2 * H], z[2 * H : 3 * H], z[3 * H :]
        c = sigmoid(f + 1.0) * c + sigmoid(i) * np.tanh(j)
        if lstm.get("cell_clip") is not None:
            clips["cell"] += int((np.abs(c) > lstm["cell_clip"]).sum())
            c = np.clip(c, -lstm["cell_clip"], lstm["cell_clip"])
        h = sigmoid(o) * np.tanh(c)
        if has_proj:
            h = h @ arrays[cell + "W_P_0"]
            if lstm.get("proj_clip") is not None:
                clips["proj"] += int((np.abs(h) > lstm["proj_clip"]).sum())
                h = np.clip(h, -lstm["proj_clip"], lstm["proj_clip"])
        outputs.append(h)
    return np.stack(outputs)  # (n, P)


def ref_bilm(arrays: dict, options: dict, tokens: list[str], clips: dict | None = None) -> list[np.ndarray]:
    """Every layer of the sentence with its boundaries, (n + 2, 2P) each, in float64."""
    clips = {"cell": 0, "proj": 0} if clips is None else clips
    arrays = {k: v.astype(np.float64) for k, v in arrays.items()}
    lstm = options["lstm"]
    ids = np.stack([ref_char_ids(t) for t in ["<S>", *tokens, "</S>"]])  # (n+2, 50)
    x = ref_token_layer(arrays, options, ids)
    stacks = []
    for direction, inputs in ((0, x), (1, x[::-1])):
        outputs = []
        for layer in range(lstm["n_layers"]):
            cell = f"RNN_{direction}/RNN/MultiRNNCell/Cell{layer}/LSTMCell/"
            out = ref_lstm(arrays, lstm, cell, inputs, clips)
            if layer > 0 and lstm["use_skip_connections"]:
                out = out + inputs
            outputs.append(out)
            inputs = out
        stacks.append(outputs)
    forward, backward = stacks
    return [np.concatenate([x, x], -1)] + [np.concatenate([f, b[::-1]], -1) for f, b in zip(forward, backward)]


def write_published(directory, options: dict, seed: int) -> dict[str, np.ndarray]:
    """Random weights in the published layout, written with plain h5py (not our exporter)."""
    rng = np.random.default_rng(seed)
    cnn, lstm = options["char_cnn"], options["lstm"]
    D, P, H = cnn["embedding"]["dim"], lstm["projection_dim"], lstm["dim"]
    F = sum(n for _, n in cnn["filters"])
    arrays = {"char_embed": rng.normal(size=(261, D))}
    for i, (width, count) in enumerate(cnn["filters"]):
        arrays[f"CNN/W_cnn_{i}"] = rng.normal(scale=0.5, size=(1, width, D, count))
        arrays[f"CNN/b_cnn_{i}"] = rng.normal(scale=0.1, size=count)
    for k in range(cnn["n_highway"]):
        for kind in ("carry", "transform"):
            arrays[f"CNN_high_{k}/W_{kind}"] = rng.normal(scale=F**-0.5, size=(F, F))
            arrays[f"CNN_high_{k}/b_{kind}"] = rng.normal(scale=0.5, size=F)
    if F != P:
        arrays["CNN_proj/W_proj"] = rng.normal(scale=F**-0.5, size=(F, P))
        arrays["CNN_proj/b_proj"] = rng.normal(scale=0.1, size=P)
    for direction in (0, 1):
        for layer in range(lstm["n_layers"]):
            cell = f"RNN_{direction}/RNN/MultiRNNCell/Cell{layer}/LSTMCell/"
            arrays[cell + "W_0"] = rng.normal(scale=0.6, size=(2 * P, 4 * H))
            arrays[cell + "B"] = rng.normal(scale=0.5, size=4 * H)
            if P < H:
                arrays[cell + "W_P_0"] = rng.normal(scale=0.6, size=(H, P))
    arrays = {k: v.astype(np.float32) for k, v in arrays.items()}
    with h5py.File(directory / "weights.hdf5", "w") as f:
        for name, value in arrays.items():
            f.create_dataset(name, data=value)
    (directory / "options.json").write_text(json.dumps(options))
    return arrays


def make_options(
    filters=((1, 3), (2, 4), (3, 5)),
    n_highway=2,
    activation="relu",
    P=6,
    H=10,
    n_layers=2,
    skip=True,
    cell_clip=1.0,
    proj_clip=0.5,
) -> dict:
    return {
        "lstm": {
            "use_skip_connections": skip,
            "projection_dim": P,
            "cell_clip": cell_clip,
            "proj_clip": proj_clip,
            "dim": H,
            "n_layers": n_layers,
        },
        "char_cnn": {
            "activation": activation,
            "filters": [list(f) for f in filters],
            "n_highway": n_highway,
            "embedding": {"dim": 4},
            "n_characters": 262,
            "max_characters_per_token": 50,
        },
    }


def tiny_bilm(seed: int = 0, vocab_size: int = 0) -> BiLM:
    """A tiny biLM with every parameter random (not the init values), zero padding row kept."""
    sizes = {"filters": [[1, 3], [2, 4], [3, 5]], "num_highway": 2, "projection_dim": 6, "cell_dim": 10}
    bilm = shared_tiny_bilm(seed, vocab_size=vocab_size, cell_clip=1.0, proj_clip=0.5, **sizes)
    with torch.no_grad():
        for p in bilm.parameters():
            p.normal_(0.0, 0.5)
        bilm.token_encoder.embedding.weight[0].zero_()
    return bilm.eval()


def our_layers(bilm: BiLM, sentences=SENTENCES) -> list[np.ndarray]:
    with torch.no_grad():
        layers, _ = bilm_layers(bilm, sentences, keep_sentence_boundaries=True)
    return [layer.double().numpy() for layer in layers]


def assert_matches_reference(layers: list[np.ndarray], arrays: dict, options: dict, clips: dict) -> None:
    for k, sentence in enumerate(SENTENCES):
        expected = ref_bilm(arrays, options, sentence, clips)
        assert len(expected) == len(layers)
        for j, (ours, ref) in enumerate(zip(layers, expected)):
            np.testing.assert_allclose(ours[k, : len(sentence) + 2], ref, rtol=1e-4, atol=2e-5, err_msg=f"layer {j}")
            assert not ours[k, len(sentence) + 2 :].any()  # padding stays zero


# ------------------------------------------------------------------------------------ reading


@pytest.mark.parametrize(
    "options",
    [
        make_options(),  # the ELMo shape: relu, residual, projection, both clips
        make_options(
            filters=((1, 2), (2, 4)), n_highway=1, activation="tanh", skip=False, cell_clip=None, proj_clip=None
        ),  # n_filters == projection_dim: bilm-tf has no CNN_proj
        make_options(P=6, H=6, n_layers=3, proj_clip=0.5),  # dim == projection_dim: no W_P_0, no proj_clip
    ],
    ids=["elmo", "no-cnn-proj-tanh", "no-lstm-proj"],
)
def test_loaded_file_matches_numpy_equations(tmp_path, options):
    arrays = write_published(tmp_path, options, seed=1)
    bilm = load_bilm_tf(tmp_path / "options.json", tmp_path / "weights.hdf5")
    clips = {"cell": 0, "proj": 0}
    assert_matches_reference(our_layers(bilm), arrays, options, clips)
    if options["lstm"]["cell_clip"] is not None:
        assert clips["cell"] > 0, "the test must exercise the cell clipping"
    if options["lstm"]["proj_clip"] is not None and options["lstm"]["dim"] > options["lstm"]["projection_dim"]:
        assert clips["proj"] > 0, "the test must exercise the projection clipping"


def test_read_options_maps_every_field(tmp_path):
    options = make_options()
    options["dropout"] = 0.25
    (tmp_path / "options.json").write_text(json.dumps(options))
    config = read_options(tmp_path / "options.json")
    assert (config.projection_dim, config.cell_dim, config.num_layers) == (6, 10, 2)
    assert (config.cell_clip, config.proj_clip, config.use_skip_connections) == (1.0, 0.5, True)
    assert config.filters == [[1, 3], [2, 4], [3, 5]] and config.num_highway == 2 and config.char_embed_dim == 4
    assert config.vocab_size == 0 and config.dropout == 0.25 and config.num_chars == 262


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda o: o["lstm"].pop("projection_dim"), "lstm.projection_dim is missing"),
        (lambda o: o["char_cnn"].update(n_characters=300), "n_characters is 300"),
        (lambda o: o["char_cnn"].update(max_characters_per_token=20), "max_characters_per_token is 20"),
        (lambda o: o["char_cnn"].update(activation="gelu"), "activation must be 'relu' or 'tanh'"),
    ],
)
def test_bad_options_name_the_option(tmp_path, edit, message):
    options = make_options()
    edit(options)
    (tmp_path / "options.json").write_text(json.dumps(options))
    with pytest.raises(ValueError, match=message):
        read_options(tmp_path / "options.json")


def test_invalid_json_names_the_line(tmp_path):
    (tmp_path / "options.json").write_text('{\n"lstm": {,\n}')
    with pytest.raises(ValueError, match=r"options.json:2: not valid JSON"):
        read_options(tmp_path / "options.json")


def test_wrong_shape_names_dataset_expected_and_found(tmp_path):
    write_published(tmp_path, make_options(), seed=2)
    with h5py.File(tmp_path / "weights.hdf5", "a") as f:
        del f["CNN/W_cnn_1"]
        f.create_dataset("CNN/W_cnn_1", data=np.zeros((1, 2, 4, 7), np.float32))
        del f["RNN_1/RNN/MultiRNNCell/Cell0/LSTMCell/B"]
    with pytest.raises(ValueError) as err:
        load_bilm_tf(tmp_path / "options.json", tmp_path / "weights.hdf5")
    text = str(err.value)
    assert "dataset 'CNN/W_cnn_1': expected shape (1, 2, 4, 4), found (1, 2, 4, 7)" in text
    assert "dataset 'RNN_1/RNN/MultiRNNCell/Cell0/LSTMCell/B' is missing (expected shape (40,))" in text
    assert "weights.hdf5" in text and "options.json" in text


def test_options_that_do_not_fit_the_weights(tmp_path):
    write_published(tmp_path, make_options(), seed=3)
    (tmp_path / "options.json").write_text(json.dumps(make_options(H=12)))
    with pytest.raises(ValueError, match=r"LSTMCell/W_0': expected shape \(12, 48\), found \(12, 40\)"):
        load_bilm_tf(tmp_path / "options.json", tmp_path / "weights.hdf5")


# ------------------------------------------------------------------------------------ writing


def test_written_file_follows_the_layout_and_matches_numpy_equations(tmp_path):
    bilm = tiny_bilm(seed=4)
    options_path, weights_path = save_bilm_tf(bilm, tmp_path / "out")
    options = json.loads(options_path.read_text())
    assert options["lstm"] == {
        "use_skip_connections": True,
        "projection_dim": 6,
        "cell_clip": 1.0,
        "proj_clip": 0.5,
        "dim": 10,
        "n_layers": 2,
    }
    assert options["char_cnn"] == {
        "activation": "relu",
        "filters": [[1, 3], [2, 4], [3, 5]],
        "n_highway": 2,
        "embedding": {"dim": 4},
        "n_characters": 262,
        "max_characters_per_token": 50,
    }
    with h5py.File(weights_path, "r") as f:
        arrays = {}
        f.visititems(lambda name, obj: arrays.__setitem__(name, obj[...]) if isinstance(obj, h5py.Dataset) else None)
    assert all(a.dtype == np.float32 for a in arrays.values())
    assert arrays["char_embed"].shape == (261, 4)
    np.testing.assert_array_equal(arrays["char_embed"], bilm.token_encoder.embedding.weight[1:].detach().numpy())
    assert arrays["CNN/W_cnn_2"].shape == (1, 3, 4, 5)
    assert arrays["RNN_0/RNN/MultiRNNCell/Cell1/LSTMCell/W_0"].shape == (12, 40)
    assert arrays["RNN_1/RNN/MultiRNNCell/Cell0/LSTMCell/W_P_0"].shape == (10, 6)
    assert len(arrays) == 1 + 2 * 3 + 4 * 2 + 2 + 3 * 2 * 2
    clips = {"cell": 0, "proj": 0}
    assert_matches_reference(our_layers(bilm), arrays, options, clips)
    assert clips["cell"] > 0 and clips["proj"] > 0


def _forget_biases(bilm: BiLM) -> list[torch.Tensor]:
    H = bilm.config.cell_dim
    return [layer.bias[H : 2 * H] for layer in [*bilm.forward_layers, *bilm.backward_layers]]


def test_round_trip_ours_file_ours_is_exact(tmp_path, caplog):
    bilm = tiny_bilm(seed=5, vocab_size=11)  # with a softmax, which the format leaves out
    with torch.no_grad():
        for forget in _forget_biases(bilm):  # forget biases start at 1.0 and stay >= 0.5 in practice
            forget.uniform_(0.5, 2.5)
    with caplog.at_level(logging.INFO):
        save_bilm_tf(bilm, tmp_path)
    assert "softmax" in caplog.text
    loaded = load_bilm_tf(tmp_path / "options.json", tmp_path / "weights.hdf5")
    ours = {k: v for k, v in bilm.state_dict().items() if not k.startswith("softmax.")}
    theirs = loaded.state_dict()
    assert ours.keys() == theirs.keys()
    for name in ours:
        assert torch.equal(ours[name], theirs[name]), name
    for a, b in zip(our_layers(bilm), our_layers(loaded)):
        assert np.array_equal(a, b)


def test_round_trip_of_small_forget_biases_moves_them_by_float32_rounding_only(tmp_path):
    bilm = tiny_bilm(seed=6)  # forget biases ~ N(0, 0.5): many below 0.5
    save_bilm_tf(bilm, tmp_path)
    loaded = load_bilm_tf(tmp_path / "options.json", tmp_path / "weights.hdf5")
    H = bilm.config.cell_dim
    for name, value in bilm.state_dict().items():
        back = loaded.state_dict()[name]
        if name.endswith(".bias") and "_layers." in name:
            assert torch.equal(value[:H], back[:H]) and torch.equal(value[2 * H :], back[2 * H :])
            forget, forget_back = value[H : 2 * H], back[H : 2 * H]
            assert torch.equal(forget[forget >= 0.5], forget_back[forget >= 0.5])
            # the file holds b - 1.0 in float32: half an ulp of b - 1 at most
            assert torch.all((forget - forget_back).abs() <= 2.0**-24 * (forget - 1.0).abs())
        else:
            assert torch.equal(value, back), name


def test_other_cells_cannot_be_written(tmp_path):
    bilm = tiny_bilm(seed=9)
    bilm.config.cell = "gru"  # the format has LSTMP cells only
    with pytest.raises(ValueError, match="projected LSTM cells only; this biLM uses cell 'gru'"):
        save_bilm_tf(bilm, tmp_path)
    assert not (tmp_path / "weights.hdf5").exists()


# ------------------------------------------------------------------------------------ load_bilm and the CLI


def test_load_bilm_accepts_every_spec(tmp_path):
    bilm = tiny_bilm(seed=7)
    save_export(tmp_path / "export", bilm)
    save_bilm_tf(bilm, tmp_path / "published")
    reference = our_layers(bilm)
    for spec in (
        tmp_path / "export",
        str(tmp_path / "published"),
        (tmp_path / "published" / "options.json", tmp_path / "published" / "weights.hdf5"),
    ):
        loaded = load_bilm(spec)
        assert not loaded.training
        for a, b in zip(reference, our_layers(loaded)):
            np.testing.assert_allclose(a, b, atol=1e-6)
    with pytest.raises(FileNotFoundError, match="neither an export folder"):
        load_bilm(tmp_path)


def test_conversion_command_both_ways(tmp_path):
    bilm = tiny_bilm(seed=8)
    save_export(tmp_path / "export", bilm)
    assert (
        convert_main(["--bilm", str(tmp_path / "export"), "--format", "bilm-tf", "--output", str(tmp_path / "tf")]) == 0
    )
    pair = f"{tmp_path / 'tf' / 'options.json'},{tmp_path / 'tf' / 'weights.hdf5'}"
    assert convert_main(["--bilm", pair, "--format", "export", "--output", str(tmp_path / "back")]) == 0
    for a, b in zip(our_layers(bilm), our_layers(load_bilm(tmp_path / "back"))):
        np.testing.assert_allclose(a, b, atol=1e-6)
