"""The pretraining system runs under Lightning DDP unchanged (two CPU processes, gloo)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import lightning as L
import torch

from elmo_pipeline.data.lm import LMBatches, build_vocabulary
from elmo_pipeline.models.config import BiLMConfig
from elmo_pipeline.models.export_folder import load_export
from elmo_pipeline.modules.lstm import bf16_supported
from elmo_pipeline.systems.pretrain import PretrainSystem
from elmo_pipeline.text.vocab import Vocabulary

ROOT = Path(__file__).parents[1]
TIMEOUT_S = 240  # a hung run: killed with all its ranks, and the test fails


def run_ranks(command: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    """Run a command that starts DDP ranks; on a timeout kill every rank (rank 0 starts the others)."""
    proc = subprocess.Popen(
        command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        out, err = proc.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # a hung rank ignores SIGTERM
        proc.communicate()
        raise AssertionError(f"the ranks hung: no end within {TIMEOUT_S} s: {' '.join(command)}") from None
    return subprocess.CompletedProcess(command, proc.returncode, out, err)


def test_two_ranks_train_on_different_shards_and_end_identical(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("".join(f"s{i} the cat sat on mat number {i % 5} .\n" for i in range(90)))
    vocab = tmp_path / "vocab.txt"  # built once here, so that both ranks read the same file
    build_vocabulary([str(corpus)]).save(vocab)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[1])}
    worker = Path(__file__).with_name("ddp_worker.py")
    proc = subprocess.run(
        [sys.executable, str(worker), str(tmp_path), str(corpus)], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]

    seen = [json.loads((tmp_path / f"seen{r}.json").read_text()) for r in (0, 1)]
    assert seen[0] and seen[1]
    assert len(seen[0]) == len(seen[1])  # same number of batches: the ranks stay in step
    words = [{w for batch in rank for w in batch} for rank in seen]
    assert not words[0] & words[1]  # each rank reads its own part of the corpus: no sentence on both
    assert len(words[0] | words[1]) == 90  # and together they read all of it

    state0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    state1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    for name, tensor in state0.items():
        torch.testing.assert_close(tensor, state1[name], rtol=0, atol=0, msg=f"{name} differs between ranks")
    # and training really changed the weights (so equality is not trivially from the shared seed)
    L.seed_everything(0)
    config = BiLMConfig.preset("tiny", cell_dim=16, projection_dim=8, num_samples=10, filters=[[1, 4], [2, 4]])
    initial = PretrainSystem(config, vocab_size=len(Vocabulary.load(vocab))).state_dict()
    changed = [n for n, t in initial.items() if not torch.equal(t, state0[n])]
    assert "bilm.forward_layers.0.weight_ih" in changed


def test_two_ranks_validate_a_set_of_one_batch(tmp_path):
    """Two sentences make one validation batch, so rank 1 has none: it must still take part (it hung before),
    and the perplexity must be the one of the whole set. Checkpoints on, bf16 where the CPU has it."""
    val = tmp_path / "val2.txt"
    val.write_text("The cat sat on the mat .\nA dog ran in the park .\n")
    precision = "bf16-mixed" if bf16_supported(torch.device("cpu")) else "32-true"
    command = [
        *(sys.executable, "-m", "elmo_pipeline.cli", "pretrain", "--config", str(ROOT / "configs/pretrain/tiny.yaml")),
        *("--trainer.strategy", "ddp", "--trainer.devices", "2", "--trainer.accelerator", "cpu"),
        *("--trainer.max_steps", "4", "--trainer.val_check_interval", "2", "--trainer.precision", precision),
        f"--data.sources=[{ROOT / 'data/sample/us_speeches.txt.gz'}]",
        *("--data.weights=null", "--data.val_sources=[val2.txt]", "--data.vocab_max_size=500"),
        *("--data.batch_size=8", "--model.bilm.cell_dim=32", "--model.bilm.projection_dim=16"),
        *("--model.bilm.num_samples=50", "--trainer.enable_progress_bar=false"),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "WANDB_MODE": "disabled"}
    proc = run_ranks(command, tmp_path, env)
    assert proc.returncode == 0, proc.stderr[-3000:]

    run = tmp_path / "runs/pretrain/tiny"
    assert (run / "checkpoints/last.ckpt").is_file() and (run / "checkpoints/best-step000004.ckpt").is_file()
    metrics = json.loads((run / "export/metrics.json").read_text())
    assert metrics["global_step"] == 4 and metrics["checkpoint"].endswith("best-step000004.ckpt")
    # the perplexity the two ranks reported is the one of the whole set on one process
    bilm, vocab = load_export(run / "export")
    (batch,) = LMBatches([str(val)], vocab, tokenizer="wikitext", batch_size=64, even_shards=False)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16-mixed"):
        out = bilm.eval()(batch["chars"], batch["forward_targets"], batch["backward_targets"], sampled=False)
    ppl = 0.5 * (torch.exp(out.forward_loss) + torch.exp(out.backward_loss))
    assert metrics["best_score"] == metrics["last_val_ppl"]
    assert abs(metrics["best_score"] - float(ppl)) <= 1e-4 * float(ppl)
