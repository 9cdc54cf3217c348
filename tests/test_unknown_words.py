"""Unknown output words: beam search's alignment, and <UNK> kept, copied from the aligned source word, or deleted."""

from __future__ import annotations

import pytest
import torch
from test_seq2seq import SOURCES, tiny_model

from elmo_pipeline.models.search import replace_unknowns, translate
from elmo_pipeline.models.seq2seq import Memory


def test_replace_unknowns_keeps_copies_or_deletes():
    words, aligned = ["a", "<UNK>", "runs", "<UNK>"], [0, 2, 1, 5]
    source = ["Ein", "Mann", "Hamburg", "."]
    assert replace_unknowns(words, aligned, source, "keep") == words
    assert replace_unknowns(words, aligned, source, "copy") == ["a", "Hamburg", "runs"]  # 5 is past the source
    assert replace_unknowns(words, aligned, source, "delete") == ["a", "runs"]
    with pytest.raises(ValueError, match="kept, copied or deleted"):
        replace_unknowns(words, aligned, source, "guess")


@pytest.mark.parametrize("beam", [1, 3])
def test_each_output_word_is_aligned_with_the_source_position_its_step_attended_most(beam):
    """Replaying the chosen words through the decoder step by step gives the same attention argmax."""
    model = tiny_model()
    for ids in SOURCES:
        source = torch.tensor(ids)
        found = translate(model, source, beam=beam)
        assert len(found.aligned) == len(found.ids) and all(0 <= p < len(ids) for p in found.aligned)
        memory, state = model.encode(source.unsqueeze(0), torch.tensor([len(ids)]))
        previous, expected = torch.tensor([0]), []  # <S>
        for word in found.ids:
            _, state, attention = model.step(previous, state, Memory(*memory))
            expected.append(int(attention.argmax(dim=-1)))
            previous = torch.tensor([word])
        assert found.aligned == expected


@pytest.mark.parametrize(
    ("mode", "expected"), [("keep", "a <UNK> runs."), ("copy", "a Mann runs."), ("delete", "a runs.")]
)
def test_translate_unk_option(tmp_path, monkeypatch, capsys, mode, expected):
    """The command copies the source word as written (not lowercased), aligned by the decoder's attention."""
    from test_hostile_translate import export_run

    from elmo_pipeline import cli
    from elmo_pipeline.commands import translate as command
    from elmo_pipeline.models.search import Translation

    run = export_run(tmp_path / "run", None)
    source = tmp_path / "in.de"
    source.write_text("Ein Mann läuft .\n", encoding="utf-8")
    # target ids: a <UNK> runs . (TARGET_WORDS of test_hostile_translate), the <UNK> aligned with "Mann"
    monkeypatch.setattr(command, "translate", lambda *args: Translation([3, 2, 6, 7], [0, 1, 2, 3]))
    assert cli.main(["translate", "--model", str(run), "--input", str(source), "--unk", mode]) == 0
    assert capsys.readouterr().out.splitlines() == [expected]
