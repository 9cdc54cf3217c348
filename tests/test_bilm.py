"""The biLM: sizes, causality, gradients, fitting, export round trip, batching and input checks."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from tiny_models import lm_batch

from elmo_pipeline.models import IGNORE, BiLM, BiLMConfig
from elmo_pipeline.models.export_folder import load_export, save_export
from elmo_pipeline.text import Vocabulary, batch_to_char_ids, word_char_ids

SENTENCE = "the cat sat on the mat .".split()
OTHER = "a dog ran far away from the big red barn".split()


def make_vocab() -> Vocabulary:
    return Vocabulary.build([SENTENCE, OTHER])


def unclipped(config: BiLMConfig) -> BiLMConfig:
    return dataclasses.replace(config, cell_clip=None, proj_clip=None)


@pytest.fixture(params=["clipped", "unclipped"])
def clip_config(request, tiny_config: BiLMConfig) -> BiLMConfig:
    """The tiny config with clipping (step-by-step LSTM) and without (fused LSTM)."""
    assert tiny_config.cell_clip is not None and tiny_config.proj_clip is not None
    return tiny_config if request.param == "clipped" else unclipped(tiny_config)


# ----------------------------------------------------------------------------- sizes


@pytest.mark.parametrize(("preset", "expected"), [("original", 93_600_864), ("small", 13_593_312)])
def test_published_parameter_counts(preset: str, expected: int) -> None:
    with torch.device("meta"):  # count without allocating 375 MB
        assert BiLM(BiLMConfig.preset(preset)).num_parameters(include_softmax=False) == expected
        with_softmax = BiLM(BiLMConfig.preset(preset, vocab_size=1000))
    assert with_softmax.num_parameters(include_softmax=False) == expected
    P = with_softmax.config.projection_dim
    assert with_softmax.num_parameters() == expected + 1000 * (P + 1)


# ----------------------------------------------------------------------------- outputs and causality


def test_layer_zero_is_token_vector_twice(tiny_config: BiLMConfig) -> None:
    model = BiLM(tiny_config).eval()
    P = tiny_config.projection_dim
    chars = batch_to_char_ids([SENTENCE, ["a", "dog"]], add_boundaries=True)  # (2, 9, C)
    out = model(chars)
    assert len(out.activations) == tiny_config.num_layers + 1
    assert all(a.shape == (2, 9, 2 * P) for a in out.activations)
    assert out.mask.tolist() == [[True] * 9, [True] * 4 + [False] * 5]
    layer0 = out.activations[0]
    torch.testing.assert_close(layer0[..., :P], layer0[..., P:], atol=0, rtol=0)
    tokens = model.token_encoder(chars)  # (2, 9, P)
    torch.testing.assert_close(layer0[out.mask][:, :P], tokens[out.mask], atol=1e-6, rtol=0)
    for activation in out.activations:
        assert torch.all(activation[~out.mask] == 0)


def test_layers_compose_as_in_the_paper(clip_config: BiLMConfig) -> None:
    """Layer 1 = LSTMP(x); layer 2 = LSTMP(h1) + h1 (residual); the backward stack reads reversed time."""
    model = BiLM(clip_config).eval()
    P = clip_config.projection_dim
    chars = batch_to_char_ids([SENTENCE], add_boundaries=True)  # (1, T, C)
    with torch.no_grad():
        out = model(chars).activations
        x = model.token_encoder(chars)  # (1, T, P)
        f1 = model.forward_layers[0](x)
        f2 = model.forward_layers[1](f1) + f1
        b1 = model.backward_layers[0](x.flip(1))  # reversed time
        b2 = (model.backward_layers[1](b1) + b1).flip(1)
        b1 = b1.flip(1)
    for layer, expected in ((1, torch.cat([f1, b1], -1)), (2, torch.cat([f2, b2], -1))):
        torch.testing.assert_close(out[layer], expected, atol=1e-6, rtol=0, msg=f"layer {layer}")
    assert not torch.allclose(out[1][..., :P], out[1][..., P:])  # the directions have their own weights


def zebra_runs(config: BiLMConfig, shift: int) -> tuple[list[torch.Tensor], list[tuple[int, list[torch.Tensor]]]]:
    """A biLM of ``config`` on SENTENCE (no boundaries): its activations, then for every position t with
    t + ``shift`` inside the sentence, t and the activations with the word at t + ``shift`` replaced by "zebra"."""
    model = BiLM(config).eval()
    chars = batch_to_char_ids([SENTENCE])  # (1, T, C)
    T = chars.shape[1]
    runs = []
    with torch.no_grad():
        base = model(chars).activations
        for t in range(max(0, -shift), T - max(0, shift)):
            changed = chars.clone()
            changed[0, t + shift] = torch.tensor(word_char_ids("zebra"))
            runs.append((t, model(changed).activations))
    return base, runs


def test_forward_lm_never_sees_the_future(clip_config: BiLMConfig) -> None:
    P = clip_config.projection_dim
    base, runs = zebra_runs(clip_config, shift=1)
    assert len(runs) == base[0].shape[1] - 1
    for t, out in runs:
        for layer in range(1, len(out)):
            past = slice(0, t + 1)
            torch.testing.assert_close(out[layer][0, past, :P], base[layer][0, past, :P], atol=1e-6, rtol=0)
            # ... and the change is visible at t+1, so the comparison above is not vacuous
            assert (out[layer][0, t + 1, :P] - base[layer][0, t + 1, :P]).abs().max() > 1e-4
        torch.testing.assert_close(out[0][0, : t + 1], base[0][0, : t + 1], atol=1e-6, rtol=0)


def test_backward_lm_never_sees_the_past(clip_config: BiLMConfig) -> None:
    P = clip_config.projection_dim
    base, runs = zebra_runs(clip_config, shift=-1)
    T = base[0].shape[1]
    assert len(runs) == T - 1
    for t, out in runs:
        for layer in range(1, len(out)):
            future = slice(t, T)
            torch.testing.assert_close(out[layer][0, future, P:], base[layer][0, future, P:], atol=1e-6, rtol=0)
            assert (out[layer][0, t - 1, P:] - base[layer][0, t - 1, P:]).abs().max() > 1e-4


def test_sentence_alone_equals_sentence_in_padded_batch(clip_config: BiLMConfig) -> None:
    model = BiLM(clip_config).eval()
    short, long = ["a", "dog", "ran"], OTHER
    with torch.no_grad():
        alone_short = model(batch_to_char_ids([short], add_boundaries=True)).activations
        alone_long = model(batch_to_char_ids([long], add_boundaries=True)).activations
        batch = model(batch_to_char_ids([long, short, long], add_boundaries=True)).activations
    n = len(short) + 2
    for layer, (a_short, a_long, b) in enumerate(zip(alone_short, alone_long, batch, strict=True)):
        torch.testing.assert_close(b[1, :n], a_short[0], atol=1e-5, rtol=0, msg=f"layer {layer}")
        torch.testing.assert_close(b[0], a_long[0], atol=1e-5, rtol=0, msg=f"layer {layer}")
        torch.testing.assert_close(b[2], a_long[0], atol=1e-5, rtol=0, msg=f"layer {layer}")
        assert torch.all(b[1, n:] == 0)


# ----------------------------------------------------------------------------- loss and training


def test_eval_loss_is_full_softmax_on_top_layer(tiny_config: BiLMConfig) -> None:
    vocab = make_vocab()
    model = BiLM(tiny_config).eval()
    P = tiny_config.projection_dim
    chars, fwd_targets, bwd_targets = lm_batch([SENTENCE, ["a", "dog", "zzz-unknown"]], vocab)
    with torch.no_grad():
        out = model(chars, fwd_targets, bwd_targets)
        top = out.activations[-1]  # (B, T, 2P)
        for half, targets, loss in (
            (top[..., :P], fwd_targets, out.forward_loss),
            (top[..., P:], bwd_targets, out.backward_loss),
        ):
            valid = targets != IGNORE
            log_probs = torch.log_softmax(half[valid] @ model.softmax.weight.T + model.softmax.bias, dim=-1)
            expected = -log_probs.gather(1, targets[valid][:, None]).mean()
            torch.testing.assert_close(loss, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.loss, 0.5 * (out.forward_loss + out.backward_loss))
    assert out.num_targets == (len(SENTENCE) + 1) + 4


@pytest.mark.parametrize("sampled", [True, False])
def test_every_parameter_gets_a_gradient(tiny_config: BiLMConfig, sampled: bool) -> None:
    vocab = make_vocab()
    model = BiLM(tiny_config).train()
    chars, fwd_targets, bwd_targets = lm_batch([SENTENCE, OTHER[:4]], vocab)
    out = model(chars, fwd_targets, bwd_targets, sampled=sampled)
    assert torch.isfinite(out.loss)
    out.loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, f"{name} has no gradient"
        assert p.grad.abs().sum() > 0, f"{name} has an all-zero gradient"


def test_tiny_model_overfits_one_sentence(tiny_config: BiLMConfig) -> None:
    vocab = make_vocab()
    model = BiLM(tiny_config).train()
    chars, fwd_targets, bwd_targets = lm_batch([SENTENCE], vocab)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    with torch.no_grad():
        initial = model.eval()(chars, fwd_targets, bwd_targets).loss.item()
    model.train()
    for _ in range(300):
        loss = model(chars, fwd_targets, bwd_targets, sampled=False).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if loss.item() < 0.02:
            break
    with torch.no_grad():
        final = model.eval()(chars, fwd_targets, bwd_targets).loss.item()
    assert initial > 3.0  # about log(V) at the start
    assert final < 0.05, f"full-softmax loss {final:.3f} after training (started at {initial:.3f})"


# ----------------------------------------------------------------------------- export


def test_export_round_trip(tmp_path, tiny_config: BiLMConfig) -> None:
    vocab = make_vocab()
    model = BiLM(tiny_config).train()
    chars, fwd_targets, bwd_targets = lm_batch([SENTENCE, OTHER], vocab)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(3):  # move the weights away from any fresh initialisation
        optimizer.zero_grad()
        model(chars, fwd_targets, bwd_targets).loss.backward()
        optimizer.step()
    model.eval()
    save_export(tmp_path / "export", model, vocab, run_config="seed: 0\n", metrics={"perplexity": 12.5})
    loaded, loaded_vocab = load_export(tmp_path / "export")
    loaded.eval()
    assert loaded.config == model.config
    assert loaded_vocab is not None and loaded_vocab.words == vocab.words
    assert (tmp_path / "export" / "run.yaml").read_text() == "seed: 0\n"
    assert json.loads((tmp_path / "export" / "metrics.json").read_text()) == {"perplexity": 12.5}
    with torch.no_grad():
        before = model(chars, fwd_targets, bwd_targets)
        after = loaded(chars, fwd_targets, bwd_targets)
    for a, b in zip(before.activations, after.activations, strict=True):
        assert torch.equal(a, b)
    assert torch.equal(before.loss, after.loss)


def test_export_without_vocab(tmp_path, tiny_config: BiLMConfig) -> None:
    encoder_only = BiLM(dataclasses.replace(tiny_config, vocab_size=0))
    save_export(tmp_path, encoder_only)
    loaded, vocab = load_export(tmp_path)
    assert vocab is None and loaded.softmax is None


def rewrite_config(directory, **changes) -> None:
    path = directory / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


def test_load_export_missing_layers_is_value_error(tmp_path, tiny_config: BiLMConfig) -> None:
    save_export(tmp_path, BiLM(tiny_config))
    rewrite_config(tmp_path, num_layers=3)
    with pytest.raises(ValueError, match="weights.pt: weights do not fit config.json"):
        load_export(tmp_path)


def test_load_export_shape_mismatch_is_value_error(tmp_path, tiny_config: BiLMConfig) -> None:
    save_export(tmp_path, BiLM(tiny_config))
    rewrite_config(tmp_path, cell_dim=48)
    with pytest.raises(ValueError, match=r"weights.pt: .* has shape .* config.json implies"):
        load_export(tmp_path)


def test_load_export_rejects_other_folders_and_versions(tmp_path, tiny_config: BiLMConfig) -> None:
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_export(tmp_path)
    save_export(tmp_path, BiLM(tiny_config))
    rewrite_config(tmp_path, format_version=99)
    with pytest.raises(ValueError, match="format version 99"):
        load_export(tmp_path)


# ----------------------------------------------------------------------------- input checks


def test_wrong_char_id_shape_is_a_clear_error(tiny_config: BiLMConfig) -> None:
    model = BiLM(tiny_config)
    with pytest.raises(ValueError, match=r"shape \(batch, tokens, 50\), got \(2, 3, 49\)"):
        model(torch.ones(2, 3, 49, dtype=torch.long))
    with pytest.raises(ValueError, match=r"got \(3, 50\)"):
        model(torch.ones(3, 50, dtype=torch.long))


@pytest.mark.parametrize("sampled", [True, False])
def test_target_outside_vocab_is_a_clear_error(tiny_config: BiLMConfig, sampled: bool) -> None:
    vocab = make_vocab()
    model = BiLM(tiny_config)
    chars, fwd_targets, bwd_targets = lm_batch([SENTENCE], vocab)
    too_big = fwd_targets.clone()
    too_big[0, 2] = tiny_config.vocab_size
    with pytest.raises(ValueError, match="target id is >= vocab_size 50"):
        model(chars, too_big, bwd_targets, sampled=sampled)
    too_big = bwd_targets.clone()
    too_big[0, 2] = 1000
    with pytest.raises(ValueError, match="vocab_size"):
        model(chars, fwd_targets, too_big, sampled=sampled)


def test_targets_need_a_softmax_and_matching_shape(tiny_config: BiLMConfig) -> None:
    vocab = make_vocab()
    chars, fwd_targets, bwd_targets = lm_batch([SENTENCE], vocab)
    with pytest.raises(ValueError, match="no softmax"):
        BiLM(dataclasses.replace(tiny_config, vocab_size=0))(chars, fwd_targets, bwd_targets)
    with pytest.raises(ValueError, match="do not match"):
        BiLM(tiny_config)(chars, fwd_targets[:, :-1], bwd_targets[:, :-1])
