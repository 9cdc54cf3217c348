"""Analysis tools: interpretable cells, the sentiment neuron (SST tree reader, L1 probe), the cell ablation."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from elmo_pipeline.analysis import sentiment_neuron
from elmo_pipeline.analysis import units as cells
from elmo_pipeline.commands import ablation as ablation_command
from elmo_pipeline.commands import sentiment_neuron as sentiment_command
from elmo_pipeline.commands import units as units_command
from elmo_pipeline.models import BiLM, BiLMConfig, BiLMOutput
from elmo_pipeline.models.export_folder import save_export
from elmo_pipeline.text import batch_to_char_ids

TEXT = [
    'He said " the cat sat on the mat " and left .',
    'The 3 dogs ( all of them ) ran . She asked " why " twice .',
    'In 1999 a " big red barn " burned ( sadly ) .',
    "Nothing was quoted here at all .",
]
QUOTE, BOW, EOW = ord('"') + 1, 258 + 1, 259 + 1  # shifted character ids of the token '"'
UNIT = 3


class QuoteTrackingBiLM(BiLM):
    """A biLM whose forward unit L1.fwd.3 is set to 1 inside quotes and -1 outside."""

    def forward(self, chars, *args, **kwargs) -> BiLMOutput:
        out = super().forward(chars, *args, **kwargs)
        is_quote = (chars[..., 0] == BOW) & (chars[..., 1] == QUOTE) & (chars[..., 2] == EOW)  # (B, T)
        inside = is_quote.long().cumsum(dim=1) % 2  # open at a quote, closed at the next
        out.activations[1][..., UNIT] = 2.0 * inside - 1.0
        return out


def test_text_properties() -> None:
    tokens = 'A " b ( c 7 ) " . D e'.split()
    values = cells.text_properties(tokens)
    np.testing.assert_array_equal(values["inside_quotes"], [0, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0])
    np.testing.assert_array_equal(values["inside_brackets"], [0, 0, 0, 1, 1, 1, 1, 0, 0, 0, 0])
    np.testing.assert_array_equal(values["position"], [0, 1, 2, 3, 4, 5, 6, 7, 8, 0, 1])
    np.testing.assert_array_equal(values["capitalised"], [1, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0])
    np.testing.assert_array_equal(values["digits"], [0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0])


def test_ranking_finds_the_quote_unit_and_writes_pages(tiny_config: BiLMConfig, tmp_path) -> None:
    bilm = QuoteTrackingBiLM(tiny_config).eval()
    sequences = [line.split() for line in TEXT]
    ranking = cells.analyze(bilm, sequences, tmp_path)
    unit, r = ranking["inside_quotes"][0]
    assert unit == f"L1.fwd.{UNIT}" and r == pytest.approx(1.0)
    assert all(u != unit for p, units in ranking.items() if p != "inside_quotes" for u, _ in units[:1])
    assert (tmp_path / f"cell_L1.fwd.{UNIT}.png").stat().st_size > 1000
    page = (tmp_path / "cells.html").read_text()
    assert f"L1.fwd.{UNIT}: tracks inside_quotes" in page and "cells_heatmap.png" in page
    assert json.loads((tmp_path / "ranking.json").read_text())["ranking"]["inside_quotes"][0][0] == unit


def test_cells_cli(tiny_config: BiLMConfig, tmp_path, capsys) -> None:
    save_export(tmp_path / "export", BiLM(tiny_config))
    text = tmp_path / "text.txt"
    text.write_text("\n".join(TEXT) + "\n")
    args = ["--bilm", str(tmp_path / "export"), "--text", str(text), "--out", str(tmp_path / "out")]
    assert units_command.main([*args, "--cells", "L1.fwd.0,L2.bwd.5"]) == 0
    written = {p.name for p in (tmp_path / "out").iterdir()}
    assert {"cells.html", "cells_heatmap.png", "cell_L1.fwd.0.png", "cell_L2.bwd.5.png", "ranking.md"} <= written
    assert "inside_quotes" in capsys.readouterr().out
    with pytest.raises(ValueError, match="--cells"):
        units_command.main([*args, "--cells", "L9.fwd.0"])


# ----------------------------------------------------------------------------- sentiment neuron


def test_tree_reader(tmp_path) -> None:
    path = tmp_path / "train.txt"
    path.write_text("(3 (2 It) (4 (2 's) (3 (3 good) (2 (2 -LRB-) (2 8\xa01\\/2) (2 -RRB-)))))\n\n(1 (1 Bad) (2 ``))\n")
    expected = [(3, ["It", "'s", "good", "(", "8\xa01/2", ")"]), (1, ["Bad", '"'])]  # SST has a leaf "8\xa01\/2"
    assert sentiment_neuron.read_sst(path) == expected
    sentences, labels = sentiment_neuron.binary([(3, ["a"]), (2, ["b"]), (0, ["c"]), (4, ["d"])])
    assert sentences == [["a"], ["c"], ["d"]] and labels.tolist() == [1.0, 0.0, 1.0]


@pytest.mark.parametrize(
    "tree", ["(3 (2 It) (4 good)", "(3 (2 It)) (2 x)", "(x (2 It))", "(7 (2 It))", "(2 (2 It) ())", "2 It"]
)
def test_malformed_tree_names_file_and_line(tmp_path, tree) -> None:
    path = tmp_path / "dev.txt"
    path.write_text("(2 (2 fine))\n" + tree + "\n")
    with pytest.raises(ValueError, match=rf"{path}:2: "):
        sentiment_neuron.read_sst(path)


def synthetic_split(n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """20 noise units; unit 7 carries the label (plus noise); units 2 and 11 a little of it."""
    y = (torch.rand(n, generator=generator) < 0.5).float()
    x = torch.randn(n, 20, generator=generator) * 3.0 + 5.0
    x[:, 7] += 4.0 * (2 * y - 1)
    x[:, 2] += 0.5 * (2 * y - 1)
    x[:, 11] -= 0.5 * (2 * y - 1)
    return x, y


def test_probe_finds_the_sentiment_unit() -> None:
    g = torch.Generator().manual_seed(0)
    result = sentiment_neuron.probe(synthetic_split(400, g), synthetic_split(200, g), synthetic_split(400, g))
    assert result.unit == 7 and result.l1_top_unit == 7
    assert result.test_accuracy_unit > 0.85 and result.test_accuracy_all > 0.85
    assert result.nonzero_units < 20  # L1 dropped some noise units
    assert result.sizes == {"train": 400, "dev": 200, "test": 400}


def test_l1_logistic_matches_its_optimality_conditions() -> None:
    """At the optimum, |gradient_j| <= l1 where w_j = 0 and gradient_j = -l1 * sign(w_j) elsewhere."""
    g = torch.Generator().manual_seed(1)
    x, y = synthetic_split(300, g)
    x = (x - x.mean(0)) / x.std(0)
    l1 = 0.02
    w, b = sentiment_neuron.fit_l1_logistic(x, y, l1, iterations=3000)
    grad = x.double().T @ (torch.sigmoid(x.double() @ w.double() + b) - y.double()) / len(y)
    nonzero = w != 0
    assert 0 < int(nonzero.sum()) < 20
    torch.testing.assert_close(grad[nonzero], -l1 * torch.sign(w[nonzero]).double(), atol=1e-4, rtol=0)
    assert float(grad[~nonzero].abs().max()) <= l1 + 1e-4


def test_sentiment_neuron_cli(tiny_config: BiLMConfig, tmp_path, capsys) -> None:
    save_export(tmp_path / "export", BiLM(tiny_config))
    sst = tmp_path / "trees"
    sst.mkdir()
    lines = ["(4 (3 great) (2 film))", "(0 (1 awful) (2 film))", "(2 (2 a) (2 film))", "(3 (3 good) (2 fun))"]
    lines += ["(1 (1 dull) (2 plot))"]
    for split in ("train", "dev", "test"):
        (sst / f"{split}.txt").write_text("\n".join(lines * 3) + "\n")
    out = tmp_path / "out"
    assert sentiment_command.main(["--bilm", str(tmp_path / "export"), "--sst-dir", str(sst), "--out", str(out)]) == 0
    record = json.loads((out / "results.json").read_text())
    assert record["sizes"] == {"train": 12, "dev": 12, "test": 12}  # label 2 dropped
    assert 0.0 <= record["test_accuracy_unit"] <= 1.0 and (out / "sentiment_unit.png").stat().st_size > 1000
    assert "best single unit" in capsys.readouterr().out


# ----------------------------------------------------------------------------- ablation


def test_ablation_writes_table_and_plot(tmp_path, capsys) -> None:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(TEXT * 10) + "\n")
    out = tmp_path / "ablation"
    config = str(Path(__file__).parents[1] / "configs" / "pretrain" / "ablation_lm.yaml")
    args = ["--config", config, "--cells", "lstm,gru", "--max-steps", "3", "--out", str(out)]
    args += [f"--data.sources=[{corpus}]", f"--data.val_sources=[{corpus}]", f"--data.vocab_path={out / 'vocab.txt'}"]
    args += ["--model.bilm.projection_dim=8", "--model.bilm.cell_dim=16", "--model.bilm.num_samples=10"]
    args += ["--data.batch_size=4", "--data.shuffle_buffer=0", "--data.val_max_sentences=8"]
    assert ablation_command.main(args) == 0
    table = (out / "ablation.md").read_text()
    assert "| lstm |" in table and "| gru |" in table and "--max-steps 3" in table
    results = json.loads((out / "results.json").read_text())["results"]
    assert [r["steps"] for r in results] == [3, 3] and all(np.isfinite(r["val_ppl"]) for r in results)
    assert results[0]["recurrent_parameters"] == 2 * 2 * (4 * 8 * (8 + 8) + 4 * 8)  # 2 directions x 2 layers
    assert (out / "ablation.png").stat().st_size > 1000
    with pytest.raises(ValueError, match="--cells"):
        ablation_command.main([*args[:3], "lstm,rnn", *args[4:]])


def test_final_states_are_the_whole_sentence_ends(tiny_config: BiLMConfig) -> None:
    """Forward top layer at </S>, backward top layer at <S>, whatever else is in the batch."""
    bilm = BiLM(dataclasses.replace(tiny_config, cell="gru")).eval()
    P = tiny_config.projection_dim
    states = sentiment_neuron.final_states(bilm, [["a", "b", "c"], ["d"]])  # (2, 2P)
    alone = bilm(batch_to_char_ids([["d"]], add_boundaries=True)).activations[-1][0]  # (3, 2P): <S> d </S>
    torch.testing.assert_close(states[1], torch.cat([alone[2, :P], alone[0, P:]]))
