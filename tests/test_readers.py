"""Readers: the fixtures read, round-trip and match their hub form; malformed input names file, line, problem."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from elmo_pipeline.data.readers import LabelledPair, ReaderError, TaggedSentence, read_split
from elmo_pipeline.data.readers.conll import bioul_to_iob2, read_conll, write_conll
from elmo_pipeline.data.readers.snli import read_snli, write_snli
from elmo_pipeline.data.readers.sst import parse_tree, read_sst
from elmo_pipeline.tasks import SPLITS, find_resource, list_tasks, load_task

FIXTURES = Path(__file__).parent / "fixtures" / "tasks"
NER, SST, SNLI = (load_task(name) for name in ("ner_conll2003", "sentiment_sst5", "nli_snli"))
TYPES = NER.labels


def assert_rejected(path, text: str, read, labels, line: int, problem: str) -> None:
    """``read(path, labels)`` of ``text`` raises a ReaderError matching ``problem`` that starts with ``path:line:``."""
    path.write_text(text)
    with pytest.raises(ReaderError, match=problem) as error:
        read(path, labels)
    assert str(error.value).startswith(f"{path}:{line}: ")


def test_task_specs_load():
    assert list_tasks() == ["ner_conll2003", "nli_snli", "sentiment_sst5"]
    assert NER.kind == "tagging" and NER.metric == "span_f1" and NER.paper["elmo"] == 92.22
    assert SST.labels == ["0", "1", "2", "3", "4"] and SST.metric == "accuracy"
    assert SNLI.kind == "pair_classification" and SNLI.hub.id == "stanfordnlp/snli"
    for spec in (NER, SST, SNLI):
        assert set(spec.local.files) == set(SPLITS)
        assert (spec.directory / "README.md").is_file()


def test_resources_are_found_from_any_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert find_resource("configs/finetune/ner_conll2003.yaml").is_file()
    assert find_resource("tests/fixtures/tasks/conll2003/train.txt").is_file()
    # an installed wheel: the resources under <prefix>/share/elmo-pipeline (here pointed at by the env var)
    share = tmp_path / "share"
    (share / "tasks" / "custom").mkdir(parents=True)
    spec = (NER.directory / "task.yaml").read_text().replace("name: ner_conll2003", "name: custom")
    (share / "tasks" / "custom" / "task.yaml").write_text(spec)
    monkeypatch.setenv("ELMO_PIPELINE_HOME", str(share))
    assert load_task("custom").labels == TYPES
    with pytest.raises(ValueError, match="unknown task 'nope'"):
        load_task("nope")


# ---- CoNLL --------------------------------------------------------------------------------------
def test_conll_fixture_reads_and_round_trips(tmp_path):
    sentences, counts = read_split(NER, "train", FIXTURES)
    assert counts["sentences"] == len(sentences) == 48 and counts["documents"] == 8
    assert not any("-DOCSTART-" in s.tokens for s in sentences)
    assert sentences[0].tokens[:3] == ["EU", "rejects", "German"]
    assert sentences[0].tags[:3] == ["U-ORG", "O", "U-MISC"]  # BIOUL out
    assert sentences[1].tags == ["B-PER", "L-PER"]
    write_conll(tmp_path / "out.txt", sentences)
    again, _ = read_conll(tmp_path / "out.txt", TYPES, "IOB2")
    assert again == sentences


def test_conll_iob1_and_iob2_give_the_same_bioul(tmp_path):
    iob1 = "-DOCSTART- -X- -X- O\n\nJohn N N I-PER\nSmith N N I-PER\nMary N N B-PER\nin N N O\nParis N N I-LOC\n\n"
    iob2 = "-DOCSTART- -X- -X- O\n\nJohn N N B-PER\nSmith N N I-PER\nMary N N B-PER\nin N N O\nParis N N B-LOC\n\n"
    (tmp_path / "a.txt").write_text(iob1)
    (tmp_path / "b.txt").write_text(iob2)
    a, _ = read_conll(tmp_path / "a.txt", TYPES, "IOB1")
    b, counts = read_conll(tmp_path / "b.txt", TYPES, "IOB2")
    assert (
        a == b == [TaggedSentence(["John", "Smith", "Mary", "in", "Paris"], ["B-PER", "L-PER", "U-PER", "O", "U-LOC"])]
    )
    assert counts["entities_started_by_I"] == 0
    _, counts = read_conll(tmp_path / "a.txt", TYPES, "IOB2")  # IOB1 read as IOB2: counted, read as conlleval does
    assert counts["entities_started_by_I"] == 2
    assert bioul_to_iob2(a[0].tags) == ["B-PER", "I-PER", "B-PER", "O", "B-LOC"]


@pytest.mark.parametrize(
    "text, line, problem",
    [
        ("EU NNP B-NP B-ORG\nrejects VBZ B-VP\n", 2, "expected 4 columns"),
        ("EU NNP B-NP B-ORG\n\nrejects VBZ B-VP B-FOO\n", 3, "unknown NER tag 'B-FOO'"),
        ("EU NNP B-NP X-ORG\n", 1, "unknown NER tag 'X-ORG'"),
    ],
)
def test_conll_rejects_malformed_input(tmp_path, text, line, problem):
    assert_rejected(tmp_path / "bad.txt", text, read_conll, TYPES, line, problem)


# ---- SST ----------------------------------------------------------------------------------------
def test_sst_fixture_reads_and_round_trips(tmp_path):
    sentences, counts = read_split(SST, "train", FIXTURES)
    assert counts["sentences"] == len(sentences) == 40
    phrases, counts = read_split(SST, "train", FIXTURES, subtrees=True)
    lines = (FIXTURES / "sst5/trees/train.txt").read_text().splitlines()
    assert len(phrases) == sum(line.count("(") for line in lines)  # one example per labelled node
    assert phrases[0] == sentences[0]  # the root comes first
    trees = [parse_tree(line, SST.labels) for line in lines]
    assert [str(t) for t in trees] == [" ".join(line.split()) for line in lines]
    (tmp_path / "t.txt").write_text("\n".join(str(t) for t in trees) + "\n")
    assert read_sst(tmp_path / "t.txt", SST.labels, subtrees=True)[0] == phrases


def test_sst_subtrees_by_hand():
    tree = parse_tree("(3 (2 It) (4 (2 's) (3 lovely)))", SST.labels)
    assert tree.leaves() == ["It", "'s", "lovely"]
    got = [(" ".join(t.leaves()), t.label) for t in tree.subtrees()]
    assert got == [("It 's lovely", "3"), ("It", "2"), ("'s lovely", "4"), ("'s", "2"), ("lovely", "3")]


@pytest.mark.parametrize(
    "text, problem",
    [
        ("(3 (2 It) (4 lovely)", "unbalanced brackets: 1 '\\(' never closed"),
        ("(3 (2 It) (4 lovely)))", "unbalanced brackets: 1 '\\)' too many"),
        ("(7 (2 It) (4 lovely))", "unknown label '7'"),
        ("(3 (2 It) ())", "a node without a label"),
        ("(3 (2 It) (4))", "empty node"),
        ("(3 (2 It) word)", "mixes words and subtrees"),
        ("(3 (2 It) (4 lovely)) (2 x)", "text after the tree"),
    ],
)
def test_sst_rejects_malformed_input(tmp_path, text, problem):
    assert_rejected(tmp_path / "bad.txt", "(2 (2 a) (2 b))\n" + text + "\n", read_sst, SST.labels, 2, problem)


# ---- SNLI ---------------------------------------------------------------------------------------
def test_snli_fixture_drops_and_counts_no_gold_pairs(tmp_path):
    pairs, counts = read_split(SNLI, "train", FIXTURES)
    assert counts == {"pairs": 60, "dropped_no_gold_label": 2}
    assert {p.label for p in pairs} == set(SNLI.labels)
    assert all(p.premise and p.hypothesis for p in pairs)
    write_snli(tmp_path / "out.jsonl.gz", pairs)
    assert read_snli(tmp_path / "out.jsonl.gz", SNLI.labels)[0] == pairs


def test_snli_tokenises_raw_text():
    path = FIXTURES / "snli" / "snli_1.0_dev.jsonl.gz"
    first = json.loads(gzip.open(path, "rt").readline())
    pairs, _ = read_snli(path, SNLI.labels)
    if first["gold_label"] != "-":
        assert " ".join(pairs[0].premise).replace(" ", "") == first["sentence1"].replace(" ", "")


@pytest.mark.parametrize(
    "line, problem",
    [
        ('{"gold_label": "neutral", "sentence1": "A dog ."}', "missing field 'sentence2'"),
        ('{"gold_label": "maybe", "sentence1": "A dog .", "sentence2": "A cat ."}', "unknown gold_label 'maybe'"),
        ('{"gold_label": "neutral", "sentence1": "A dog .", "sentence2": ""}', "sentence2 is empty"),
        ('{"gold_label": "neutral", "sentence1": "A dog ."', "not valid JSON"),
        ('["neutral"]', "expected a JSON object"),
    ],
)
def test_snli_rejects_malformed_input(tmp_path, line, problem):
    text = '{"gold_label": "-", "sentence1": "x", "sentence2": "y"}\n' + line + "\n"
    assert_rejected(tmp_path / "bad.jsonl", text, read_snli, SNLI.labels, 2, problem)


# ---- the hub gives the same examples ------------------------------------------------------------
def _hub_rows(spec, split):
    """The fixture of ``split`` in the hub's schema (what ``datasets.load_dataset`` returns offline here)."""
    if spec is NER:
        names = NER.hub.label_names
        rows = [{"tokens": ["-DOCSTART-"], "ner_tags": [0]}]
        for s in read_split(NER, split, FIXTURES)[0]:
            rows.append({"tokens": s.tokens, "ner_tags": [names.index(t) for t in bioul_to_iob2(s.tags)]})
        return rows
    if spec is SST:
        return [{"ptb_tree": line} for line in (FIXTURES / SST.local.files[split]).read_text().splitlines()]
    rows = []
    for line in gzip.open(FIXTURES / SNLI.local.files[split], "rt"):
        row = json.loads(line)
        label = SNLI.hub.label_names.index(row["gold_label"]) if row["gold_label"] != "-" else -1
        rows.append({"premise": row["sentence1"], "hypothesis": row["sentence2"], "label": label})
    return rows


@pytest.mark.parametrize("spec", [NER, SST, SNLI], ids=lambda s: s.name)
def test_hub_and_local_files_give_the_same_examples(spec, monkeypatch):
    import datasets

    calls = []

    def fake_load_dataset(name, config=None, split=None):
        calls.append((name, config, split))
        ours = {v: k for k, v in spec.hub.splits.items()}[split]
        return _hub_rows(spec, ours)

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    for split in SPLITS:
        subtrees = spec is SST and split == "train"
        hub, hub_counts = read_split(spec, split, subtrees=subtrees)
        local, local_counts = read_split(spec, split, FIXTURES, subtrees=subtrees)
        assert hub == local
        if spec is SNLI:
            assert hub_counts == local_counts
    assert calls[0] == (spec.hub.id, spec.hub.config, spec.hub.splits["train"])


def test_hub_failure_says_how_to_read_local_files(monkeypatch):
    import datasets

    def offline(*args, **kwargs):
        raise ConnectionError("no network")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(RuntimeError, match="--data.data_root"):
        read_split(SNLI, "validation")


def test_pairs_are_labelled_pairs():
    pairs, _ = read_split(SNLI, "test", FIXTURES)
    assert all(isinstance(p, LabelledPair) for p in pairs) and len(pairs) == 30


def test_sst_examples_unescape_ptb_tokens_for_the_bilm(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("(2 (2 -LRB-) (3 (2 8\xa01\\/2) (2 -RRB-)) (2 ``) (2 a\\*b) (2 ''))\n")
    tree = parse_tree(path.read_text(), SST.labels)
    assert tree.leaves() == ["-LRB-", "8\xa01\\/2", "-RRB-", "``", "a\\*b", "''"]  # the tree keeps the escapes
    (example,), _ = read_sst(path, SST.labels)
    assert example.tokens == ["(", "8\xa01/2", ")", '"', "a*b", '"']  # the words read like raw text
    (raw,), _ = read_sst(path, SST.labels, unescape=False)
    assert raw.tokens == tree.leaves()


def test_every_task_format_has_a_reader():
    from elmo_pipeline.data.readers import FORMATS
    from elmo_pipeline.tasks import FORMATS as SPEC_FORMATS

    assert set(FORMATS) == set(SPEC_FORMATS)  # the names a task.yaml may give, and the registry of readers
    for name, reader in FORMATS.items():
        assert reader.name == name and callable(reader.read_file) and callable(reader.read_hub_rows)
