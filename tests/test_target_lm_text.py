"""`target-lm`: a fusion LM's in-domain text (the training targets, with a held-out tail) and its perplexity."""

from __future__ import annotations

import json
import math
import shutil

import pytest
import torch
from test_seq2seq import FIXTURE, tiny_lm

from elmo_pipeline import cli
from elmo_pipeline.data.readers.base import ReaderError
from elmo_pipeline.data.translation import TranslationDataModule, write_target_text
from elmo_pipeline.errors import InputError, MissingFileError, WouldOverwriteError
from elmo_pipeline.interop import save_bilm_tf
from elmo_pipeline.models.export_folder import save_export
from elmo_pipeline.models.target_lm import TargetLM, target_perplexity
from elmo_pipeline.text.vocab import SPECIALS, Vocabulary


def test_the_text_is_the_training_targets_as_seq2seq_reads_them_with_the_tail_held_out(tmp_path):
    counts = write_target_text(FIXTURE, tmp_path / "text", dev_lines=10)
    data = TranslationDataModule(data_root=str(FIXTURE), min_count=1)
    targets = [t for _, t in data.pairs["train"]]  # tokenised as the decoder sees them, case kept
    train = (tmp_path / "text" / "train.txt").read_text("utf-8").splitlines()
    dev = (tmp_path / "text" / "dev.txt").read_text("utf-8").splitlines()
    assert [line.split(" ") for line in train] == targets[:50]
    assert [line.split(" ") for line in dev] == targets[50:]
    assert counts == {
        "train_sentences": 50,
        "train_tokens": sum(map(len, targets[:50])),
        "dev_sentences": 10,
        "dev_tokens": sum(map(len, targets[50:])),
    }


def test_bad_text_input_is_refused_with_the_file_and_the_fix(tmp_path):
    with pytest.raises(MissingFileError, match=r"train\.en\[\.gz\]: no such file"):
        write_target_text(tmp_path, tmp_path / "out")
    shutil.copy(FIXTURE / "train.en", tmp_path / "train.en")
    with pytest.raises(InputError, match="has 60 lines; hold out fewer"):
        write_target_text(tmp_path, tmp_path / "out", dev_lines=60)
    (tmp_path / "train.en").write_text("A dog runs .\n\nA man .\n", encoding="utf-8")
    with pytest.raises(ReaderError, match=r"train\.en:2.*empty line"):
        write_target_text(tmp_path, tmp_path / "out", dev_lines=1)
    assert not (tmp_path / "out" / "train.txt").exists()  # nothing half-written
    (tmp_path / "train.en").write_text("A dog runs .\nA man .\n", encoding="utf-8")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "dev.txt").write_text("mine\n", encoding="utf-8")
    with pytest.raises(WouldOverwriteError, match="dev.txt exists; pass --overwrite"):
        write_target_text(tmp_path, tmp_path / "out", dev_lines=1)
    assert (tmp_path / "out" / "dev.txt").read_text("utf-8") == "mine\n"  # the user's file is kept
    write_target_text(tmp_path, tmp_path / "out", dev_lines=1, overwrite=True)
    assert (tmp_path / "out" / "dev.txt").read_text("utf-8") == "A man .\n"


def test_the_perplexity_is_the_mean_negative_log_likelihood_of_each_target_word_and_end(tmp_path):
    bilm, _ = tiny_lm()
    lm_vocab = Vocabulary([*SPECIALS, "A", "man", "a", "in", ".", "dog", "the"])
    export = save_export(tmp_path / "lm", bilm, lm_vocab)
    data = TranslationDataModule(data_root=str(FIXTURE), min_count=1, lm=str(export), batch_size=7)
    lm = TargetLM(bilm, lm_vocab, list(data.target_vocabulary.words)).eval()
    total, count = 0.0, 0
    with torch.no_grad():  # one sentence at a time, no padding: <S> y -> y </S>
        for _, target in data.pairs["val"]:
            ids = data.target_vocabulary.ids(target)
            log_probs = lm(torch.tensor([[Vocabulary.bos_id, *ids]]))[0]  # (T + 1, V)
            expected = [*ids, Vocabulary.eos_id]
            total -= sum(float(log_probs[t, w]) for t, w in enumerate(expected))
            count += len(expected)
    assert target_perplexity(lm, data.val_dataloader()) == pytest.approx(math.exp(total / count), abs=0.006)


def test_the_command_writes_the_text_and_compares_lms_on_the_same_target_words(tmp_path, capsys):
    text = ["target-lm", "text", "--data-root", str(FIXTURE), "--out", str(tmp_path / "t"), "--dev-lines", "5"]
    assert cli.main(text) == 0
    assert json.loads(capsys.readouterr().out)["dev_sentences"] == 5
    bilm, _ = tiny_lm()
    lm_vocab = Vocabulary([*SPECIALS, "A", "man", "a", "in", "."])
    first = save_export(tmp_path / "first", bilm, lm_vocab)
    torch.manual_seed(5)
    other = type(bilm)(bilm.config).eval()
    second = save_export(tmp_path / "second", other, lm_vocab)
    argv = ["target-lm", "perplexity", "--data-root", str(FIXTURE), "--min-count", "1"]
    assert cli.main([*argv[:-1], "0", "--lm", str(first)]) != 0
    assert "--min-count must be at least 1" in capsys.readouterr().err
    assert cli.main([*argv, "--lm", str(first), "--lm", str(second), "--output", str(tmp_path / "p.json")]) == 0
    captured = capsys.readouterr()
    rows = json.loads((tmp_path / "p.json").read_text())
    assert [json.loads(line) for line in captured.out.splitlines()] == rows
    assert [row["lm"] for row in rows] == [str(first), str(second)]
    assert rows[0]["target_vocabulary_sha256"] == rows[1]["target_vocabulary_sha256"]
    assert rows[0]["perplexity"] != rows[1]["perplexity"] and rows[0]["sentences"] == 40
    assert "do not compare" not in captured.err
    assert cli.main([*argv, "--lm", str(first), "--split", "train", "--output", str(tmp_path / "t.json")]) == 0
    capsys.readouterr()
    (train,) = json.loads((tmp_path / "t.json").read_text())
    data = TranslationDataModule(data_root=str(FIXTURE), min_count=1, lm=str(first))
    target = TargetLM(bilm, lm_vocab, list(data.target_vocabulary.words)).eval()
    assert train["split"] == "train" and train["sentences"] == 60  # every training pair
    assert train["perplexity"] == pytest.approx(target_perplexity(target, data.train_dataloader()), rel=1e-5)
    assert train["perplexity"] != rows[0]["perplexity"]  # the train targets are not the val targets
    wider = save_export(tmp_path / "wider", bilm, Vocabulary([*SPECIALS, "A", "man", "a", "in", ".", "dog"]))
    assert cli.main([*argv, "--lm", str(first), "--lm", str(wider)]) == 0
    assert "do not compare" in capsys.readouterr().err


def test_an_lm_that_cannot_predict_words_is_refused_in_one_line(tmp_path, capsys):
    bilm, _ = tiny_lm()
    save_bilm_tf(bilm, tmp_path / "published")  # the published format: no softmax, no vocabulary
    for lm, message in ((tmp_path / "nothing", "nothing"), (tmp_path / "published", "no softmax vocabulary")):
        assert cli.main(["target-lm", "perplexity", "--data-root", str(FIXTURE), "--lm", str(lm)]) != 0
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err
