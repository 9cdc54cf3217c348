"""`elmo-pipeline finetune` end to end on the bundled fixtures, for every task and arm; every shipped config parses."""

from __future__ import annotations

import io
import json
from contextlib import redirect_stdout
from pathlib import Path

import pytest
import torch
import yaml

from elmo_pipeline.cli import main as cli_main
from elmo_pipeline.commands.finetune import main as finetune_main
from elmo_pipeline.data.activation_cache import bilm_fingerprint
from elmo_pipeline.errors import InputError
from elmo_pipeline.models.bilm import BiLM
from elmo_pipeline.models.config import BiLMConfig
from elmo_pipeline.models.export_folder import save_export
from elmo_pipeline.models.source import BiLMSource
from elmo_pipeline.systems.finetune_cli import build_cli

ROOT = Path(__file__).parents[1]
FINETUNE_CONFIGS = sorted((ROOT / "configs" / "finetune").glob("*.yaml"))
SMALL_HEAD = {
    "ner_conll2003": ["--model.head.init_args.hidden_size=16", "--model.head.init_args.num_layers=1"],
    "sentiment_sst5": [f"--model.head.init_args.{k}=16" for k in ("pre_encode_dim", "hidden_size", "integrator_size")],
    "nli_snli": [f"--model.head.init_args.{k}=16" for k in ("hidden_size", "projection_dim", "inference_size")],
}


@pytest.fixture(scope="module")
def tiny_export(tmp_path_factory) -> Path:
    torch.manual_seed(123)  # not the random arm's seed (0), so that "trained" and random weights differ
    config = BiLMConfig.preset("tiny", cell_dim=16, projection_dim=8, filters=[[1, 8], [2, 8]], num_samples=0)
    return save_export(tmp_path_factory.mktemp("export") / "export", BiLM(config))


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # configs, tasks and fixtures must be found from any directory
    monkeypatch.setenv("WANDB_MODE", "disabled")
    return tmp_path


def _run(task: str, *extra: str) -> dict:
    args = [
        "finetune",
        "--config",
        f"configs/finetune/{task}.yaml",
        *SMALL_HEAD[task],
        "--model.word_dim=8",
        "--model.word_vectors=none",  # the shipped configs read GloVe; test_glove_* uses a tiny file
        "--model.char_filters=8",
        "--data.train_subtrees=false",
        "--trainer.max_epochs=2",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        "--trainer.log_every_n_steps=1",
        f"--results_path=results/{task}.json",
        *extra,
    ]
    assert cli_main(args) == 0
    return json.loads(Path(f"results/{task}.json").read_text())


def test_ner_elmo_and_random_arms_end_to_end(in_tmp, tiny_export):
    record = _run("ner_conll2003", f"--data.elmo={tiny_export}")
    assert record["arm"] == "elmo" and record["head"] == "CrfTagger" and record["seed"] == 0
    assert record["monitor"] == "val/f1" and Path(record["best_checkpoint"]).is_file()
    assert 0.0 <= record["test"]["f1"] <= 1.0 and {"f1-PER", "precision", "recall"} <= set(record["test"])
    assert record["data"]["examples"] == {"train": 48, "validation": 24, "test": 24}
    weights = record["mix_weights"]["input"]["softmax_w"]
    assert len(weights) == 3 and sum(weights) == pytest.approx(1.0)  # token layer + 2 LSTM layers
    caches = {p.name for p in (in_tmp / "runs/cache/activations").iterdir()}
    assert len(caches) == 3  # train, validation, test, for this biLM

    record = _run("ner_conll2003", f"--data.elmo=random:{tiny_export}")
    assert record["arm"] == "random_bilm"
    after = {p.name for p in (in_tmp / "runs/cache/activations").iterdir()}
    assert len(after) == 6 and caches < after  # its own caches: a different biLM never reads a stale cache
    metrics = (in_tmp / "runs/finetune/ner_conll2003/logs/version_1/metrics.csv").read_text().splitlines()[0]
    assert "mix/input_w0" in metrics and "final_mix/input_w2" in metrics  # softmax(w) logged for plots


def test_sst_baseline_end_to_end(in_tmp):
    record = _run("sentiment_sst5")
    assert record["arm"] == "baseline" and record["head"] == "BiattentiveClassifier"
    assert record["mix_weights"] == {} and not (in_tmp / "runs/cache").exists()  # no biLM, no cache
    assert 0.0 <= record["test"]["acc"] <= 1.0 and record["monitor"] == "val/acc"
    assert record["data"]["examples"]["train"] == 40  # whole sentences (--data.train_subtrees false)


def test_snli_elmo_at_input_and_output_end_to_end(in_tmp, tiny_export):
    record = _run("nli_snli", f"--data.elmo={tiny_export}", "--data.max_train_examples=32")
    assert record["arm"] == "elmo" and record["head"] == "ESIM"
    assert set(record["mix_weights"]) == {"input", "output"}  # one mix per place
    assert record["data"]["read"]["train"]["dropped_no_gold_label"] == 2
    assert record["data"]["examples"]["train"] == 32
    assert 0.0 <= record["test"]["acc"] <= 1.0


def test_glove_vectors_predictions_and_conlleval(in_tmp):
    from elmo_pipeline.data.task_datamodule import TaskDataModule
    from elmo_pipeline.metrics.conlleval import conlleval

    fixtures = "tests/fixtures/tasks"
    words = sorted({w.lower() for s in TaskDataModule("ner_conll2003", fixtures).splits["train"].texts for w in s})[:5]
    vectors = {w: [float(i + 1)] * 4 + [-0.5] * 4 for i, w in enumerate(words)}
    Path("glove.txt").write_text("".join(f"{w} {' '.join(map(str, v))}\n" for w, v in vectors.items()))
    record = _run(
        "ner_conll2003",
        "--model.word_vectors=glove.txt",
        "--model.freeze_word_vectors=true",
    )
    assert record["data"]["word_vectors"]["train_words_found"] == 5 and record["data"]["lowercase_words"] is True
    assert record["stopped_by"] in ("early_stopping", "max_epochs")
    state = torch.load(record["best_checkpoint"], weights_only=True)["state_dict"]
    embedding = state["embedder.word_embedding.weight"]  # frozen: still the GloVe rows after training
    index = TaskDataModule("ner_conll2003", fixtures, lowercase_words=True, word_vectors="glove.txt").word_index
    for word, vector in vectors.items():
        assert embedding[index[word]].tolist() == vector
    # the predictions file, scored by conlleval's rules, gives the F1 that the run logged
    scores = conlleval(record["predictions"])
    assert scores["f1"] == pytest.approx(100 * record["test"]["f1"], abs=1e-3)
    assert scores["gold"] > 0 and Path(record["predictions"]).name == "test.conll"


def test_early_stopping_keeps_the_best_dev_epoch_and_says_what_stopped(in_tmp):
    callbacks = yaml.safe_load(Path(ROOT / "configs/finetune/sentiment_sst5.yaml").read_text())["trainer"]["callbacks"]
    callbacks[1]["init_args"]["patience"] = 2
    Path("patience.yaml").write_text(yaml.safe_dump({"trainer": {"callbacks": callbacks}}))
    record = _run("sentiment_sst5", "--trainer.max_epochs=8", "--config=patience.yaml")
    lines = (in_tmp / "runs/finetune/sentiment_sst5/logs/version_0/metrics.csv").read_text().splitlines()
    header = lines[0].split(",")
    rows = [dict(zip(header, line.split(","))) for line in lines[1:]]
    per_epoch = [(int(r["epoch"]), float(r["val/acc"])) for r in rows if r.get("val/acc")]
    per_epoch = per_epoch[: record["epochs"]]  # the training epochs; the last row is the re-validation of the best
    best_epoch = max(per_epoch, key=lambda ev: (ev[1], -ev[0]))  # the first epoch with the best dev score
    assert record["best_val"] == pytest.approx(best_epoch[1])
    assert Path(record["best_checkpoint"]).name == f"best-epoch{best_epoch[0]:03d}.ckpt"
    assert record["val"]["acc"] == pytest.approx(best_epoch[1])  # test used that checkpoint
    if record["stopped_by"] == "early_stopping":
        assert len(per_epoch) < 8 and per_epoch[-1][0] - best_epoch[0] == 2  # patience 2
    else:
        assert record["stopped_by"] == "max_epochs" and len(per_epoch) == 8
    labels = Path(record["predictions"]).read_text().splitlines()
    assert len(labels) == record["data"]["examples"]["test"] and set(labels) <= {"0", "1", "2", "3", "4"}


def test_a_run_that_hits_its_time_limit_says_so(in_tmp):
    callbacks = yaml.safe_load(Path(ROOT / "configs/finetune/sentiment_sst5.yaml").read_text())["trainer"]["callbacks"]
    callbacks[1]["init_args"]["patience"] = 100_000  # only the clock can stop it
    Path("patient.yaml").write_text(yaml.safe_dump({"trainer": {"callbacks": callbacks}}))
    limits = ["--trainer.max_epochs=100000", "--trainer.max_time=00:00:00:02"]
    record = _run("sentiment_sst5", "--config=patient.yaml", *limits)
    assert record["stopped_by"] == "time_limit" and record["epochs"] < 100_000


def resolve_bilm(spec: str):
    """What the data module does with --data.elmo."""
    return BiLMSource.parse(spec).load(seed=0, frozen=True)


def test_random_arm_is_a_frozen_biLM_of_the_same_size(tiny_export):
    trained, random = resolve_bilm(str(tiny_export)), resolve_bilm(f"random:{tiny_export}")
    assert random.config == trained.config and not any(p.requires_grad for p in random.parameters())
    assert bilm_fingerprint(random) != bilm_fingerprint(trained)
    assert bilm_fingerprint(random) == bilm_fingerprint(resolve_bilm(f"random:{tiny_export}"))  # seeded


def test_published_files_are_accepted(tmp_path, tiny_export):
    from elmo_pipeline.interop import save_bilm_tf

    options, weights = save_bilm_tf(resolve_bilm(str(tiny_export)), tmp_path)
    bilm = resolve_bilm(f"{options},{weights}")
    assert bilm.config.projection_dim == 8 and not bilm.training


def _resolved(path: Path) -> dict:
    out = io.StringIO()
    with redirect_stdout(out), pytest.raises(SystemExit) as exit_info:
        finetune_main(["fit", "--config", str(path), "--print_config"])
    assert exit_info.value.code in (0, None)
    return yaml.safe_load(out.getvalue())


@pytest.mark.parametrize("path", FINETUNE_CONFIGS, ids=lambda p: p.name)
def test_finetune_config_parses(path):
    text = path.read_text()
    assert text.startswith("#") and f"elmo-pipeline finetune --config configs/finetune/{path.name}" in text
    config = _resolved(path)
    assert config["data"]["task"] == path.stem and config["data"]["elmo"] is None  # the baseline by default
    assert config["data"]["data_root"] == "tests/fixtures/tasks"  # offline by default
    monitors = {c["init_args"]["monitor"] for c in config["trainer"]["callbacks"]}
    assert monitors == {"val/f1" if path.stem == "ner_conll2003" else "val/acc"}  # selection on dev


@pytest.mark.parametrize("alias", [["--model.elmo", "{}"], ["--model.elmo={}"]], ids=["spaced", "equals"])
def test_model_elmo_is_an_alias_of_data_elmo(in_tmp, tiny_export, alias):
    """The deprecated ``--model.elmo`` instantiates the same run as ``--data.elmo``, its one home."""
    common = ["--config", "configs/finetune/sentiment_sst5.yaml", "--model.word_vectors=none", "--seed_everything=0"]
    runs = []
    for option in (["--data.elmo", str(tiny_export)], [a.format(tiny_export) for a in alias]):
        torch.manual_seed(0)
        runs.append(build_cli([*common, *option], run=False))
    new, old = runs
    assert new.datamodule.elmo == old.datamodule.elmo == str(tiny_export)
    assert new.config.as_dict() == old.config.as_dict()
    assert dict(new.model.hparams) == dict(old.model.hparams) and new.model.hparams.elmo_num_layers > 0
    assert new.model.state_dict().keys() == old.model.state_dict().keys()
    for key, value in new.model.state_dict().items():
        assert torch.equal(value, old.model.state_dict()[key]), key


def test_every_task_has_a_config():
    assert [p.stem for p in FINETUNE_CONFIGS] == ["ner_conll2003", "nli_snli", "sentiment_sst5"]


def test_a_config_file_with_model_elmo_still_reads(in_tmp, tiny_export, caplog):
    """A YAML written for the old home (``model: elmo:``) runs as if it said ``data: elmo:``; the file stays."""
    old = in_tmp / "old.yaml"
    old.write_text(f"model:\n  elmo: {tiny_export}\n  word_vectors: none\n", encoding="utf-8")
    before = old.read_text(encoding="utf-8")
    common = ["--config", "configs/finetune/sentiment_sst5.yaml", "--seed_everything=0"]
    torch.manual_seed(0)
    with caplog.at_level("WARNING"):
        from_file = build_cli([*common, "--config", str(old)], run=False)
    torch.manual_seed(0)
    direct = build_cli([*common, "--model.word_vectors=none", "--data.elmo", str(tiny_export)], run=False)
    assert from_file.datamodule.elmo == direct.datamodule.elmo == str(tiny_export)
    assert dict(from_file.model.hparams) == dict(direct.model.hparams)
    assert old.read_text(encoding="utf-8") == before
    assert "model.elmo, which is deprecated" in caplog.text
    both = in_tmp / "both.yaml"
    both.write_text(f"model:\n  elmo: {tiny_export}\ndata:\n  elmo: {tiny_export}\n", encoding="utf-8")
    with pytest.raises(InputError, match="sets both model.elmo"):
        build_cli([*common, "--config", str(both)], run=False)


def test_bf16_heads_keep_their_losses_in_float32():
    from elmo_pipeline.modules.heads.base import class_output
    from elmo_pipeline.modules.heads.encoders import masked_softmax

    logits = torch.randn(4, 3).bfloat16()
    out = class_output(logits, torch.tensor([0, 1, 2, 0]))
    assert out.logits.dtype == torch.float32 and out.loss.dtype == torch.float32
    mask = torch.tensor([[True, True, False]])
    weights = masked_softmax(torch.tensor([[1.0, 2.0, 50.0]]).bfloat16(), mask)
    assert weights.dtype == torch.float32 and weights[0, 2] == 0 and float(weights.sum()) == pytest.approx(1.0)


@pytest.mark.skipif(
    not __import__("elmo_pipeline.modules.lstm", fromlist=["x"]).bf16_supported(torch.device("cpu")),
    reason="needs a CPU with native bf16",
)
def test_ner_trains_in_bf16(in_tmp, tiny_export):
    record = _run("ner_conll2003", f"--data.elmo={tiny_export}", "--trainer.precision=bf16-mixed")
    assert record["arm"] == "elmo" and 0.0 <= record["test"]["f1"] <= 1.0 and record["val"]["loss"] > 0


def test_bf16_finetuning_is_refused_where_the_processor_lacks_it(in_tmp, monkeypatch, capsys):
    from elmo_pipeline.modules import lstm

    monkeypatch.setattr(lstm, "bf16_supported", lambda device: False)
    args = ["finetune", "--config", "configs/finetune/sentiment_sst5.yaml", *SMALL_HEAD["sentiment_sst5"]]
    args += ["--model.word_vectors=none", "--model.word_dim=8", "--trainer.precision=bf16-mixed"]
    assert cli_main(args) != 0
    err = capsys.readouterr().err
    assert "finetune: --trainer.precision bf16-mixed needs native bf16" in err and "Traceback" not in err
