"""Nothing run, nothing lost, nothing silent: unsafe checkpoints, overwrites, divergence, clean errors."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from test_pretrain_cli import TINY, _overrides

import elmo_pipeline.systems.pretrain_cli  # noqa: F401  (Lightning's log handler binds the real stderr, not a capture)
from elmo_pipeline.cli import main as cli_main


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.delenv("ELMO_PIPELINE_DEBUG", raising=False)
    return tmp_path


class _RunsCode:
    """Unpickling this calls os.mkdir(marker): the stand-in for any command a crafted pickle runs."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


def _pretrain(*extra: str, steps: int = 4) -> int:
    return cli_main(["pretrain", "--config", TINY, *_overrides(steps), *extra])


def _error(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


def test_crafted_checkpoint_is_refused_and_runs_nothing(in_tmp, capsys):
    marker = in_tmp / "pwned"
    crafted = in_tmp / "crafted.ckpt"
    torch.save({"state_dict": {}, "payload": _RunsCode(marker)}, crafted)
    # passed directly, to fit and to test
    for command in (["pretrain", "fit"], ["pretrain", "test"]):
        assert cli_main([*command, "--config", TINY, *_overrides(4), "--ckpt_path", str(crafted)]) == 1
        assert "crafted.ckpt holds objects other than tensors and plain data" in _error(capsys)
    # planted as the last.ckpt that `--ckpt_path best` consults
    checkpoints = in_tmp / "runs" / "pretrain" / "tiny" / "checkpoints"
    checkpoints.mkdir(parents=True)
    (checkpoints / "last.ckpt").write_bytes(crafted.read_bytes())
    assert cli_main(["pretrain", "test", "--config", TINY, *_overrides(4), "--ckpt_path", "best"]) == 1
    assert "last.ckpt holds objects other than tensors" in _error(capsys)
    assert not marker.exists()


def test_truncated_checkpoint_and_missing_last_are_named(in_tmp, capsys):
    assert _pretrain("--ckpt_path", "last") == 1
    err = _error(capsys)
    assert "--ckpt_path last: no last.ckpt in" in err and "runs/pretrain/tiny/checkpoints" in err
    assert not (in_tmp / "runs" / "pretrain" / "tiny" / "export").exists()  # it did not train from scratch

    assert _pretrain() == 0
    last = in_tmp / "runs" / "pretrain" / "tiny" / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[:5000])  # a disk that filled up mid-save
    assert _pretrain("--ckpt_path", "last", steps=8) == 1
    assert "last.ckpt cannot be read (truncated or corrupt?" in _error(capsys)


def test_a_new_run_does_not_replace_a_finished_export(in_tmp, capsys):
    assert _pretrain() == 0
    weights = in_tmp / "runs" / "pretrain" / "tiny" / "export" / "weights.pt"
    before = weights.read_bytes()
    assert _pretrain("--seed_everything", "1") == 1
    err = _error(capsys)
    assert "holds the export of an earlier run" in err and "--model.overwrite true" in err
    assert weights.read_bytes() == before
    # asked for: a new folder, or overwrite
    assert _pretrain("--model.export_dir", "elsewhere", "--trainer.default_root_dir", "other") == 1
    assert "holds the checkpoints of an earlier run" in _error(capsys)  # the checkpoint folder is the config's
    assert _pretrain("--seed_everything", "1", "--model.overwrite", "true") == 0
    assert weights.read_bytes() != before


def test_diverged_pretraining_exits_non_zero_and_exports_nothing(in_tmp, capsys):
    assert _pretrain("--model.lr", "1e6", "--model.optimizer", "sgd", "--trainer.gradient_clip_val", "null") == 1
    err = _error(capsys)
    assert "training diverged" in err and "at global step" in err and "Lower --model.lr" in err
    assert not (in_tmp / "runs" / "pretrain" / "tiny" / "export").exists()


def test_debug_shows_the_traceback(in_tmp, monkeypatch):
    with pytest.raises(FileNotFoundError):
        cli_main(["--debug", "pretrain", "--config", TINY, *_overrides(4), "--ckpt_path", "last"])
    monkeypatch.setenv("ELMO_PIPELINE_DEBUG", "1")
    with pytest.raises(FileNotFoundError):
        cli_main(["pretrain", "--config", TINY, *_overrides(4), "--ckpt_path", "last"])


# ---- messages: the file, the line, the fix ------------------------------------------------------------------------
FIXTURES = Path(__file__).parent / "fixtures" / "tasks"


def _conll_copy(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    (root / "conll2003").mkdir(parents=True)
    for name in ("train.txt", "valid.txt", "test.txt"):
        (root / "conll2003" / name).write_bytes((FIXTURES / "conll2003" / name).read_bytes())
    return root


def test_non_utf8_byte_is_reported_on_its_own_line(tmp_path):
    from elmo_pipeline.data.readers import ReaderError, open_lines

    path = tmp_path / "big.txt"
    # far past the text decoder's 8 KB buffer, where the line count used to lag
    path.write_bytes(b"".join(b"line %d of plain text\n" % i for i in range(1, 9001)) + b"caf\xe9\n")
    with pytest.raises(ReaderError, match=r"big.txt:9001: not UTF-8 \(byte 0xe9 at column 4\)"):
        list(open_lines(path))


def test_truncated_gzip_is_named_in_task_files_and_corpora(tmp_path):
    import gzip

    from elmo_pipeline.data.corpus import iter_lines
    from elmo_pipeline.data.readers import ReaderError, open_lines

    data = gzip.compress("".join(f"line {i} with a few words\n" for i in range(20_000)).encode())
    path = tmp_path / "cut.txt.gz"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ReaderError, match=r"cut.txt.gz:\d+: the gzip file is truncated or corrupt"):
        list(open_lines(path))
    with pytest.raises(ValueError, match=r"cut.txt.gz: the gzip file is truncated or corrupt after line \d+"):
        list(iter_lines(str(path)))


def test_a_corpus_that_starts_with_many_blank_lines_is_read(tmp_path):
    from elmo_pipeline.data.corpus import iter_lines, resolve_files

    path = tmp_path / "late.txt"
    path.write_text("\n" * 5000 + "text at last .\n")
    assert resolve_files(str(path)) == [path]
    assert [line for line in iter_lines(str(path)) if line] == ["text at last ."]
    (tmp_path / "blank.txt").write_text("\n" * 5000)
    with pytest.raises(ValueError, match=r"blank.txt: the corpus file is empty \(no non-blank line in 5000 lines\)"):
        resolve_files(str(tmp_path / "blank.txt"))


def test_an_empty_training_split_names_its_file(tmp_path):
    from elmo_pipeline.data.task_datamodule import TaskDataModule

    root = _conll_copy(tmp_path)
    (root / "conll2003" / "train.txt").write_text("-DOCSTART- -X- -X- O\n\n")
    with pytest.raises(ValueError, match=r"conll2003/train.txt: the train split of ner_conll2003 has no examples"):
        TaskDataModule("ner_conll2003", data_root=str(root))


def test_overlong_tokens_in_task_files_are_counted_and_warned(tmp_path, caplog):
    from elmo_pipeline.data.task_datamodule import TaskDataModule

    root = _conll_copy(tmp_path)
    train = root / "conll2003" / "train.txt"
    train.write_text(train.read_text() + "x" * 10_000 + " NN B-NP O\n\n")
    with caplog.at_level("WARNING", logger="elmo_pipeline.data.task_datamodule"):
        data = TaskDataModule("ner_conll2003", data_root=str(root), max_word_chars=30)
    assert data.counts["train"]["words_cut_to_max_word_chars"] == 1
    assert "the longest has 10000 characters" in caplog.text


def test_finetune_errors_print_one_line(in_tmp, capsys):
    root = _conll_copy(in_tmp)
    (root / "conll2003" / "valid.txt").write_bytes(b"EU NNP B-NP B-ORG\ncaf\xe9 NN I-NP O\n")
    config = str(Path(__file__).parents[1] / "configs" / "finetune" / "ner_conll2003.yaml")
    assert cli_main(["finetune", "--config", config, "--data.data_root", str(root)]) == 1
    err = _error(capsys)
    assert "valid.txt:2: not UTF-8" in err
