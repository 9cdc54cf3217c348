"""`embed --shard-lines`: shards on 1 or 2 processes, resume after kill -9, refusals, merge and reader."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from elmo_pipeline import cli
from elmo_pipeline.embed_shards import MANIFEST, ShardedEmbeddings
from elmo_pipeline.models import BiLM, BiLMConfig
from elmo_pipeline.models.export_folder import save_export

SAMPLE = Path(__file__).parents[1] / "data" / "sample" / "wikitext2_valid_excerpt.txt"


def _export(path: Path, seed: int) -> Path:
    torch.manual_seed(seed)
    config = BiLMConfig(
        char_embed_dim=4, filters=[[1, 4], [2, 4], [3, 8]], num_highway=1, projection_dim=8, cell_dim=16, num_layers=2
    )
    config.num_samples = 0
    return save_export(path, BiLM(config).eval())


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, Path, Path, Path]:
    """Two input files cut from the bundled sample (non-empty lines), one export, and the one-process file."""
    folder = tmp_path_factory.mktemp("shards")
    lines = [line for line in SAMPLE.read_text(encoding="utf-8").splitlines() if line.split()][:90]
    first, second = folder / "a.txt", folder / "b.txt"
    first.write_text("\n".join(lines[:60]) + "\n", encoding="utf-8")
    second.write_text("\n".join(lines[60:]) + "\n", encoding="utf-8")
    (folder / "all.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    export = _export(folder / "export", 0)
    single = folder / "single.hdf5"
    assert _cli("embed", "--input", folder / "all.txt", "--output", single, "--bilm", export, "--no-progress") == 0
    return first, second, export, single


def _cli(*argv: object) -> int:
    return cli.main([str(a) for a in argv])


def _subprocess(*argv: object, timeout: int = 240) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "elmo_pipeline.cli", *map(str, argv)]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)


def _same_as_single(single: Path, arrays) -> None:
    with h5py.File(single, "r") as one:
        assert sorted(one, key=int) == [str(k) for k in sorted(map(int, arrays.keys()))]
        for key in one:
            np.testing.assert_allclose(arrays[int(key)], one[key][...], atol=1e-6, rtol=0)


def test_two_processes_merged_equal_one_process(corpus, tmp_path):
    first, second, export, single = corpus
    folder = tmp_path / "out"
    args = ["embed", "--input", first, second, "--output", folder, "--bilm", export, "--shard-lines", "25"]
    proc = _subprocess(*args, "--devices", "2", "--device", "cpu", "--no-progress")
    assert proc.returncode == 0, proc.stderr[-3000:]
    names = sorted(p.name for p in folder.iterdir())
    assert names == [MANIFEST] + [f"shard-{i:05d}.hdf5" for i in range(5)]  # 60 = 25+25+10, 30 = 25+5
    merged = tmp_path / "merged.hdf5"
    assert _cli("merge-embeddings", folder, "--output", merged) == 0
    with h5py.File(merged, "r") as out:
        _same_as_single(single, {int(k): out[k][...] for k in out})
    with ShardedEmbeddings(folder) as reader:  # the reader, without merging
        assert len(reader) == 90
        _same_as_single(single, {k: reader[k] for k in reader})
        with pytest.raises(KeyError):
            reader[90]


def test_kill_9_loses_only_unfinished_shards_and_the_rerun_keeps_finished_ones(corpus, tmp_path):
    first, second, export, single = corpus
    folder = tmp_path / "out"
    args = ["embed", "--input", first, second, "--output", folder, "--bilm", export, "--shard-lines", "5"]
    slow = textwrap.dedent(
        f"""
        import sys, time
        from elmo_pipeline import cli, embed
        real = embed.write_embeddings
        def slow(*a, **k):
            stats = real(*a, **k)
            time.sleep(0.5)  # a slow run, so that the kill lands in the middle
            return stats
        embed.write_embeddings = slow
        import elmo_pipeline.embed_shards as shards
        shards.write_embeddings = slow
        sys.exit(cli.main({[str(a) for a in args] + ["--device", "cpu", "--no-progress"]!r}))
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", slow], stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 120
    while len(list(folder.glob("shard-*.hdf5"))) < 3 and time.time() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in folder.glob("shard-*.hdf5")}
    assert 3 <= len(finished) < 18, "the kill should land mid-run"
    assert _cli(*args, "--device", "cpu", "--no-progress") == 0
    for name, (data, mtime) in finished.items():  # never rewritten
        assert (folder / name).read_bytes() == data and (folder / name).stat().st_mtime_ns == mtime
    assert len(list(folder.glob("shard-*.hdf5"))) == 18
    assert not list(folder.glob("*.partial")) and not list(folder.glob("*.lock"))
    with ShardedEmbeddings(folder) as reader:
        _same_as_single(single, {k: reader[k] for k in reader})


def test_a_rerun_with_another_input_biLM_or_option_is_refused(corpus, tmp_path, capsys):
    first, second, export, _ = corpus
    folder = tmp_path / "out"
    base = ["embed", "--output", folder, "--shard-lines", "30", "--device", "cpu", "--no-progress"]
    assert _cli(*base, "--input", first, "--bilm", export) == 0
    capsys.readouterr()
    changed = tmp_path / "a.txt"
    changed.write_text(first.read_text(encoding="utf-8").replace(" the ", " a ", 1), encoding="utf-8")
    cases = [
        (["--input", second, "--bilm", export], "holds the shards of other inputs"),
        (["--input", first, "--bilm", _export(tmp_path / "other", 1)], "holds the shards of another biLM"),
        (["--input", first, "--bilm", export, "--layers", "top"], "holds the shards of a run with --layers all"),
    ]
    for extra, message in cases:
        assert _cli(*base, *extra) == 1
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    os.replace(changed, first.with_name("a_changed.txt"))
    # the same path with other content
    backup = first.read_bytes()
    try:
        first.write_bytes(first.with_name("a_changed.txt").read_bytes())
        assert _cli(*base, "--input", first, "--bilm", export) == 1
        assert f"another version of {first.resolve()}" in capsys.readouterr().err
    finally:
        first.write_bytes(backup)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before  # nothing was touched


def test_several_inputs_need_shard_lines(corpus, tmp_path, capsys):
    first, second, export, _ = corpus
    with pytest.raises(SystemExit):
        _cli("embed", "--input", first, second, "--output", tmp_path / "x.hdf5", "--bilm", export)
    assert "several --input files need --shard-lines" in capsys.readouterr().err
