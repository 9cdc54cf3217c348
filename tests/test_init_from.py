"""Domain-adaptive pretraining: start from an export or the published files, a new softmax, optionally frozen first."""

from __future__ import annotations

import pytest
import torch
from tiny_models import quiet_trainer
from torch.utils.data import DataLoader

from elmo_pipeline.data.lm import make_batch
from elmo_pipeline.interop import save_bilm_tf
from elmo_pipeline.models import BiLM, BiLMConfig
from elmo_pipeline.models.elmo import bilm_layers
from elmo_pipeline.models.export_folder import save_export
from elmo_pipeline.models.source import BiLMSource
from elmo_pipeline.systems.pretrain import PretrainSystem
from elmo_pipeline.text import Vocabulary

SENTENCES = ["the cat sat on the mat .".split(), "a dog ran far away from the big red barn".split()]


@pytest.fixture
def source(tmp_path):
    """A tiny biLM with a sampled softmax over its own vocabulary, as an export folder and as the published files."""
    torch.manual_seed(1)
    vocab = Vocabulary.build([["one", "two", "three"]])
    config = BiLMConfig.preset("tiny", vocab_size=len(vocab), cell_dim=16, projection_dim=8, num_samples=4)
    bilm = BiLM(config).eval()
    export = save_export(tmp_path / "export", bilm, vocab)
    options, weights = save_bilm_tf(bilm, tmp_path / "published")
    return bilm, {"export": str(export), "published": f"{options},{weights}"}


def _fit(system: PretrainSystem, batch: dict, steps: int, root) -> None:
    """``steps`` steps on the same batch with a fresh, quiet CPU trainer (no logs, no checkpoints)."""
    trainer = quiet_trainer(root, max_steps=steps)
    trainer.fit(system, train_dataloaders=DataLoader([batch] * steps, batch_size=None))


def _run_config(vocab_size: int) -> BiLMConfig:
    # a different architecture in the run's YAML: init_from replaces it with the source's
    return BiLMConfig.preset(
        "tiny", vocab_size=vocab_size, cell_dim=32, projection_dim=16, softmax="adaptive", adaptive_cutoffs=[8, 12]
    )


@pytest.mark.parametrize("form", ["export", "published"])
def test_loaded_layers_equal_the_source_before_the_first_step(source, form):
    bilm, forms = source
    vocab = Vocabulary.build(SENTENCES)
    system = PretrainSystem(_run_config(len(vocab)), vocab_size=len(vocab), init_from=forms[form])
    adapted = system.bilm.eval()
    assert (adapted.config.cell_dim, adapted.config.projection_dim) == (16, 8)  # the source's architecture
    assert adapted.config.softmax == "adaptive" and adapted.softmax.vocab_size == len(vocab)  # the run's softmax
    with torch.no_grad():
        for a, b in zip(bilm_layers(bilm, SENTENCES)[0], bilm_layers(adapted, SENTENCES)[0], strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    assert BiLMSource.parse(forms[form]).config().cell_dim == 16  # the source is untouched


def test_softmax_only_steps_then_everything(source, tmp_path):
    _, forms = source
    vocab = Vocabulary.build(SENTENCES)
    system = PretrainSystem(
        _run_config(len(vocab)),
        vocab_size=len(vocab),
        init_from=forms["export"],
        softmax_only_steps=3,
        optimizer="adam",
        lr=0.01,
    )
    encoder = {k: v.clone() for k, v in system.bilm.state_dict().items() if not k.startswith("softmax.")}
    softmax = {k: v.clone() for k, v in system.bilm.state_dict().items() if k.startswith("softmax.")}
    batch = make_batch(SENTENCES, vocab)

    def fit(steps: int) -> None:
        _fit(system, batch, steps, tmp_path)

    fit(3)
    state = system.bilm.state_dict()
    assert all(torch.equal(state[k], v) for k, v in encoder.items())  # frozen for 3 steps
    assert any(not torch.equal(state[k], v) for k, v in softmax.items())  # the softmax learned
    fit(5)  # a fresh trainer from step 0 again: 3 frozen steps, then 2 of everything
    assert any(not torch.equal(system.bilm.state_dict()[k], v) for k, v in encoder.items())


def test_init_softmax_keeps_the_source_softmax_or_says_why_not(source):
    bilm, forms = source
    keep = BiLMConfig.preset("tiny", vocab_size=bilm.config.vocab_size, num_samples=4)
    system = PretrainSystem(keep, vocab_size=bilm.config.vocab_size, init_from=forms["export"], init_softmax=True)
    for name, value in bilm.softmax.state_dict().items():
        assert torch.equal(system.bilm.softmax.state_dict()[name], value)
    with pytest.raises(ValueError, match="the published files have none"):
        PretrainSystem(keep, vocab_size=bilm.config.vocab_size, init_from=forms["published"], init_softmax=True)


def test_the_export_is_also_written_in_the_published_format(source, tmp_path):
    _, forms = source
    vocab = Vocabulary.build(SENTENCES)
    out = tmp_path / "adapted"
    system = PretrainSystem(
        _run_config(len(vocab)),
        vocab_size=len(vocab),
        init_from=forms["published"],
        export_dir=str(out),
        optimizer="adam",
        lr=0.01,
    )
    _fit(system, make_batch(SENTENCES, vocab), 2, tmp_path)
    assert (out / "options.json").is_file() and (out / "weights.hdf5").is_file() and (out / "weights.pt").is_file()
    published = BiLMSource.parse(f"{out / 'options.json'},{out / 'weights.hdf5'}").load()
    with torch.no_grad():
        for a, b in zip(bilm_layers(system.bilm.eval(), SENTENCES)[0], bilm_layers(published, SENTENCES)[0]):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


def test_init_softmax_needs_the_source_vocabulary_in_the_cli(tmp_path, monkeypatch, capsys):
    from test_pretrain_cli import TINY, _overrides

    import elmo_pipeline.systems.pretrain_cli  # noqa: F401  (Lightning's log handler binds the real stderr)
    from elmo_pipeline.cli import main as cli_main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert cli_main(["pretrain", "--config", TINY, *_overrides(2)]) == 0
    source = tmp_path / "runs" / "pretrain" / "tiny" / "export"
    vocab = source / "vocab.txt"
    adapt = [*_overrides(2), f"--model.init_from={source}", "--model.init_softmax=true"]
    adapt += ["--model.export_dir=adapted", "--trainer.default_root_dir=adapt", f"--data.vocab_path={vocab}"]
    adapt += ["--trainer.callbacks=[]", "--trainer.logger=false", "--trainer.enable_checkpointing=false"]
    assert cli_main(["pretrain", "--config", TINY, *adapt]) == 0  # the source's own vocabulary: kept
    words = vocab.read_text().splitlines()
    shuffled = tmp_path / "shuffled.txt"
    shuffled.write_text("\n".join(words[:3] + words[3:][::-1]) + "\n")  # same size, other words per row
    capsys.readouterr()
    assert cli_main(["pretrain", "--config", TINY, *adapt, f"--data.vocab_path={shuffled}"]) == 1
    assert "is not the one of" in capsys.readouterr().err
