"""Translation with LM fusion: attention masks, search, fusion, batch invariance, BLEU, the reader, the CLI."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import pytest
import torch
from tiny_models import encoder_config

from elmo_pipeline import cli
from elmo_pipeline.data.readers.base import ReaderError
from elmo_pipeline.data.translation import TranslationDataModule, read_parallel
from elmo_pipeline.models import BiLM
from elmo_pipeline.models.export_folder import save_export
from elmo_pipeline.models.search import greedy, translate
from elmo_pipeline.models.seq2seq import Seq2Seq, Seq2SeqConfig
from elmo_pipeline.models.target_lm import TargetLM
from elmo_pipeline.modules.attention import AdditiveAttention
from elmo_pipeline.systems.seq2seq import corpus_bleu
from elmo_pipeline.text.vocab import SPECIALS, Vocabulary

FIXTURE = Path(__file__).parent / "fixtures" / "multi30k"
TARGET_WORDS = [*SPECIALS, "a", "man", "dog", "runs", "on", "the", "grass", "."]


def tiny_lm(words=TARGET_WORDS, vocab_extra=("woman",)) -> tuple[BiLM, Vocabulary]:
    """The shared tiny biLM (seed 1, two filters, clips 0.5) with a full softmax over ``words`` + ``vocab_extra``."""
    lm_vocab = Vocabulary([*words, *vocab_extra])
    config = encoder_config(vocab_size=len(lm_vocab), cell_clip=0.5, proj_clip=0.5, softmax="full")
    torch.manual_seed(1)
    return BiLM(config).eval(), lm_vocab


def tiny_model(fusion: str = "none", seed: int = 0) -> Seq2Seq:
    torch.manual_seed(seed)
    config = Seq2SeqConfig(
        12, len(TARGET_WORDS), 8, 8, 16, 8, dropout=0.0, fusion=fusion, cold_lm_dim=6, cold_hidden_dim=10
    )
    lm = None
    if fusion != "none":
        bilm, vocab = tiny_lm()
        lm = TargetLM(bilm, vocab, TARGET_WORDS)
    return Seq2Seq(config, lm).eval()


def padded(sentences: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    source = torch.zeros(len(sentences), max(map(len, sentences)), dtype=torch.long)
    for i, s in enumerate(sentences):
        source[i, : len(s)] = torch.tensor(s)
    return source, torch.tensor([len(s) for s in sentences])


SOURCES = [[3, 4, 5, 6, 7], [8, 9], [10, 3, 4, 11, 5, 6, 7, 8], [4]]


def test_attention_weights_sum_to_one_and_padding_gets_none():
    torch.manual_seed(0)
    attention = AdditiveAttention(5, 6, 4)
    keys = torch.randn(3, 7, 6)
    mask = torch.tensor([[True] * 7, [True] * 3 + [False] * 4, [True] + [False] * 6])
    context, weights = attention(torch.randn(3, 5), keys, attention.project_keys(keys), mask)
    torch.testing.assert_close(weights.sum(dim=-1), torch.ones(3))
    assert (weights[~mask] == 0).all() and (weights[mask] > 0).all()
    torch.testing.assert_close(context, torch.einsum("bs,bsk->bk", weights, keys))


@pytest.mark.parametrize("fusion", ["none", "cold"])
def test_a_sentence_alone_equals_the_same_sentence_in_a_batch(fusion):
    model = tiny_model(fusion)
    source, lengths = padded(SOURCES)
    target_in = torch.tensor([[0, 3, 4, 5], [0, 6, 0, 0], [0, 7, 8, 9], [0, 3, 0, 0]])
    with torch.no_grad():
        batch_logits = model(source, lengths, target_in)
        batch_outputs = greedy(model, source, lengths)
        for i, sentence in enumerate(SOURCES):
            alone_source, alone_lengths = padded([sentence])
            alone = model(alone_source, alone_lengths, target_in[i : i + 1])
            torch.testing.assert_close(alone[0, :2], batch_logits[i, :2], atol=1e-5, rtol=1e-5)  # real target steps
            assert greedy(model, alone_source, alone_lengths) == [batch_outputs[i]]


@pytest.mark.parametrize("fusion", ["none", "cold"])
def test_teacher_forcing_equals_the_search_steps(fusion):
    """Training reads the output layer once over every step (and the LM over whole prefixes); search
    steps the decoder and the LM one word at a time. Both give the same logits at every step."""
    model = tiny_model(fusion)
    source, lengths = padded(SOURCES)
    target_in = torch.tensor([[0, 3, 4, 5], [0, 6, 7, 2], [0, 7, 8, 9], [0, 3, 10, 4]])
    with torch.no_grad():
        forced = model(source, lengths, target_in)  # (B, T, V)
        memory, state = model.encode(source, lengths)
        for t in range(target_in.shape[1]):
            logits, state, _ = model.step(target_in[:, t], state, memory)
            torch.testing.assert_close(logits, forced[:, t], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("fusion", ["none", "shallow", "cold"])
def test_beam_of_one_equals_greedy(fusion):
    model = tiny_model(fusion)
    weight = 0.3 if fusion == "shallow" else 0.0
    source, lengths = padded(SOURCES)
    expected = greedy(model, source, lengths, lm_weight=weight)
    assert [translate(model, torch.tensor(s), beam=1, lm_weight=weight).ids for s in SOURCES] == expected


def test_shallow_fusion_with_lambda_zero_equals_no_fusion():
    plain, fused = tiny_model("none", seed=3), tiny_model("shallow", seed=3)  # the same seq2seq weights
    fused.load_state_dict(plain.state_dict(), strict=False)
    for sentence in SOURCES:
        source = torch.tensor(sentence)
        assert translate(fused, source, beam=3, lm_weight=0.0).ids == translate(plain, source, beam=3).ids
    # and a weight that is not zero does change some search scores (the LM is really consulted)
    changed = [
        translate(fused, torch.tensor(s), beam=3, lm_weight=5.0).ids != translate(plain, torch.tensor(s), beam=3).ids
        for s in SOURCES
    ]
    assert any(changed)


def test_the_lm_inside_cold_fusion_gets_no_gradient():
    model = tiny_model("cold").train()
    source, lengths = padded(SOURCES)
    target_in = torch.tensor([[0, 3, 4], [0, 6, 7], [0, 7, 8], [0, 3, 9]])
    logits = model(source, lengths, target_in)
    logits.logsumexp(-1).sum().backward()
    lm_params = list(model.lm.parameters())
    assert lm_params and all(not p.requires_grad and p.grad is None for p in lm_params)
    assert model.lm.bilm.training is False  # frozen LM: no dropout while the decoder trains
    assert model.fusion.gate.weight.grad is not None and model.fusion.gate.weight.grad.abs().sum() > 0


def test_target_lm_steps_equal_whole_prefixes_and_cover_the_target_words():
    bilm, vocab = tiny_lm(vocab_extra=())
    words = [*TARGET_WORDS, "zebra"]  # not in the LM's vocabulary: scored as <UNK>
    lm = TargetLM(bilm, vocab, words)
    assert lm.oov == 1
    ids = torch.tensor([[0, 3, 4, 5, 6, 11], [0, 7, 8, 9, 10, 3]])
    whole = lm(ids)  # (B, T, V)
    state = lm.initial_state(2)
    for t in range(ids.shape[1]):
        step, state = lm.step(ids[:, t], state)
        torch.testing.assert_close(step, whole[:, t], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(whole.exp().sum(-1), torch.ones(2, 6))  # a distribution over the target words
    full = bilm.softmax.log_probs(torch.zeros(8))
    assert whole.shape[-1] == len(words) and full.shape[-1] == len(vocab)


def test_bleu_of_identical_lines_is_100_and_of_disjoint_lines_0():
    lines = ["A man runs on the grass.", "Two dogs play in the snow together."]
    assert corpus_bleu(lines, lines)[0] == pytest.approx(100.0)
    assert corpus_bleu(["x y z w", "q r s t u"], lines)[0] == pytest.approx(0.0)
    assert "tok:13a" in corpus_bleu(lines, lines)[2]


@pytest.mark.parametrize(
    "source, target, message",
    [
        (b"ein Mann\nzwei Hunde\n", b"a man\n", r"train.de:2: has no partner: .*train.en ends after 1 lines"),
        (b"ein Mann\n", b"a man\ntwo dogs\n", r"train.en:2: has no partner: .*train.de ends after 1 lines"),
        (b"ein Mann\n   \n", b"a man\ntwo dogs\n", r"train.de:2: empty line"),
        (b"ein Mann\nzwei Hunde\n", b"a man\ntwo caf\xe9s\n", r"train.en:2: not UTF-8"),
    ],
)
def test_bad_parallel_input_names_the_file_and_line(tmp_path, source, target, message):
    (tmp_path / "train.de").write_bytes(source)
    (tmp_path / "train.en").write_bytes(target)
    with pytest.raises(ReaderError, match=message):
        read_parallel(tmp_path / "train.de", tmp_path / "train.en")


def test_the_fixture_reads_with_gzip_and_the_lm_restricts_the_target_vocabulary(tmp_path):
    for path in FIXTURE.glob("*.??"):
        with gzip.open(tmp_path / (path.name + ".gz"), "wb") as out:
            out.write(path.read_bytes())
    bilm, _ = tiny_lm()
    lm_vocab = Vocabulary([*SPECIALS, "A", "man", "a", "in", "."])
    export = save_export(tmp_path / "lm", bilm, lm_vocab)
    data = TranslationDataModule(data_root=str(tmp_path), min_count=1, lm=str(export))
    assert len(data.pairs["train"]) == 60 and len(data.pairs["val"]) == len(data.references["val"]) == 40
    assert set(data.target_vocabulary.words) <= set(lm_vocab.words)
    batch = next(iter(data.val_dataloader()))
    assert batch["target_out"][batch["target_out"] >= 0].numel() == sum(
        len(data.pairs["val"][i][1]) + 1 for i in batch["index"].tolist()
    )


def test_the_command_trains_tests_and_translates(tmp_path, capsys):
    """seq2seq fit -> results.json (test BLEU, lambda chosen on val) -> translate with the exported model."""
    words = sorted(
        {w for line in (FIXTURE / "train.en").read_text().split("\n") for w in line.replace(".", " .").split()}
    )
    bilm, lm_vocab = tiny_lm(words=[*SPECIALS, *words], vocab_extra=())
    export = save_export(tmp_path / "lm", bilm, lm_vocab)
    root = tmp_path / "runs"
    args = [
        "seq2seq", "--config", "configs/seq2seq/multi30k_de_en.yaml", "--data.data_root", str(FIXTURE),
        "--model.lm", str(export), "--model.fusion", "none", "--model.lm_weights", "[0.0, 0.5]",
        "--model.embedding_dim", "8", "--model.encoder_dim", "8", "--model.decoder_dim", "16",
        "--model.attention_dim", "8", "--model.beam", "2", "--data.min_count", "1", "--trainer.max_epochs", "2",
        "--trainer.default_root_dir", str(root), "--trainer.enable_progress_bar", "false",
        "--trainer.logger.init_args.save_dir", str(root),
    ]  # fmt: skip
    assert cli.main(args) == 0
    run = next(root.glob("logs/version_*"))
    record = json.loads((run / "results.json").read_text())
    assert record["fusion"] == "none" and set(record["decoding"]) == {"none", "shallow"}
    shallow = record["decoding"]["shallow"]
    assert set(shallow["val_bleu_by_lambda"]) == {"0.0", "0.5"} and shallow["lm_weight"] in (0.0, 0.5)
    assert record["decoding"]["none"]["lm_weight"] == 0.0 and "tok:13a" in record["bleu_signature"]
    assert record["lm_val_perplexity"] > 1 and 0 <= shallow["test_bleu"] <= 100
    for decoding in record["decoding"].values():  # <UNK> handling chosen on val, ties kept
        by_unk = decoding["val_bleu_by_unk"]
        assert set(by_unk) == {"keep", "copy", "delete"} and by_unk[decoding["unk"]] == max(by_unk.values())
        assert decoding["val_bleu"] == by_unk[decoding["unk"]]
    assert len((run / "translations.shallow.test.txt").read_text().splitlines()) == 40
    capsys.readouterr()
    source = tmp_path / "in.de"
    shutil.copy(FIXTURE / "val.de", source)
    assert cli.main(["translate", "--model", str(run), "--input", str(source)]) == 0
    assert capsys.readouterr().out.splitlines() == (run / "translations.none.val.txt").read_text().splitlines()


def test_the_shipped_config_parses(capsys):
    from elmo_pipeline.commands.seq2seq import main

    path = Path(__file__).parents[1] / "configs" / "seq2seq" / "multi30k_de_en.yaml"
    assert path.read_text().startswith("#") and "elmo-pipeline seq2seq" in path.read_text().split("seed_everything")[0]
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(path), "--print_config"])
    assert exit_info.value.code in (0, None)
    printed = capsys.readouterr().out
    assert "fusion: none" in printed and "monitor: val/bleu" in printed


def test_an_interrupted_run_resumes_exactly(tmp_path):
    """3 epochs straight == 1 epoch, stop, resume from last.ckpt for 2 more: same weights (dropout on)."""

    def fit(root: Path, epochs: int, *extra: str) -> dict[str, torch.Tensor]:
        args = [
            "seq2seq", "--config", "configs/seq2seq/multi30k_de_en.yaml", "--data.data_root", str(FIXTURE),
            "--model.lm", "null", "--model.fusion", "none", "--model.dropout", "0.3",
            "--model.embedding_dim", "8", "--model.encoder_dim", "8", "--model.decoder_dim", "16",
            "--model.attention_dim", "8", "--data.min_count", "1", "--data.batch_size", "8",
            "--trainer.max_epochs", str(epochs), "--trainer.default_root_dir", str(root),
            "--trainer.enable_progress_bar", "false", "--trainer.logger.init_args.save_dir", str(root), *extra,
        ]  # fmt: skip
        assert cli.main(args) == 0
        versions = sorted(root.glob("logs/version_*"), key=lambda p: int(p.name.split("_")[1]))
        return torch.load(versions[-1] / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]

    straight = fit(tmp_path / "straight", 3)
    fit(tmp_path / "resumed", 1)
    resumed = fit(tmp_path / "resumed", 3, "--ckpt_path", "last")
    assert straight.keys() == resumed.keys()
    for name in straight:
        assert torch.equal(straight[name], resumed[name]), name
