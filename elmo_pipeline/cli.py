"""`elmo-pipeline <command>`: one entry point; each command is a module of elmo_pipeline/commands/ (imported lazily)."""

from __future__ import annotations

import importlib
import os
import signal
import sys

from elmo_pipeline.errors import UserError, debug_requested, is_reported
from elmo_pipeline.files import Terminated

# command -> (its module in elmo_pipeline/commands/, one-line help); the module's main takes the remaining argv
COMMANDS: dict[str, tuple[str, str]] = {
    "reproduce": ("reproduce", "the paper's results table: pretrain, transfer, seeds (resumable)"),
    "pretrain": ("pretrain", "pretrain a biLM (LightningCLI: fit, validate, ...)"),
    "finetune": ("finetune", "train a task head with or without ELMo (LightningCLI)"),
    "vocab": ("vocab", "build a word vocabulary from a corpus"),
    "curves": ("curves", "plot a pretraining run's learning curves"),
    "bench": ("bench", "benchmark training throughput, memory and GFLOP/s"),
    "embed": ("embed", "embed a file of sentences into HDF5 (bilm-tf layout) with a biLM"),
    "merge-embeddings": ("merge_embeddings", "merge the shards of `embed --shard-lines` into one file"),
    "export": ("export", "write a biLM as the published options.json + weights.hdf5, or back"),
    "generate": ("generate", "sample text from a biLM's forward language model"),
    "units": ("units", "find and plot interpretable units of a biLM over a text"),
    "cells": ("units", "the same as `units` (its former name)"),
    "sentiment-neuron": ("sentiment_neuron", "SST sentiment from a biLM's units (L1)"),
    "ablation": ("ablation", "train one biLM per recurrent cell, compare ppl/speed"),
    "seq2seq": ("seq2seq", "train a translation model, with or without LM fusion"),
    "translate": ("translate", "translate a file with a model trained by `seq2seq`"),
    "target-lm": ("target_lm", "a fusion LM's in-domain text, and its perplexity over a translation's target words"),
}


def _usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"  {name:<{width}}  {help_}" for name, (_, help_) in COMMANDS.items()]
    return (
        "usage: elmo-pipeline [--debug] <command> [options]\n\ncommands:\n"
        + "\n".join(lines)
        + "\n\n--debug (or ELMO_PIPELINE_DEBUG=1) shows the traceback of an error instead of its one-line message\n"
    )


def die_with_parent() -> None:
    """A child of ``reproduce`` (``ELMO_PIPELINE_PARENT_PID`` set) is killed when that parent dies, even by kill -9.

    Linux's parent-death signal; elsewhere a no-op (the work folder's lock, which every child holds,
    still keeps a rerun out while a child lives).
    """
    parent = os.environ.get("ELMO_PIPELINE_PARENT_PID")
    if not parent or not sys.platform.startswith("linux"):
        return
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() != int(parent):  # it died before the request: follow it now
        os.kill(os.getpid(), signal.SIGKILL)
    # this process's own children (e.g. the DDP ranks Lightning starts with this environment) follow it
    os.environ["ELMO_PIPELINE_PARENT_PID"] = str(os.getpid())


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    die_with_parent()
    debug = debug_requested(argv)
    if argv and argv[0] == "--debug":
        argv = argv[1:]
    if not argv or argv[0] in ("-h", "--help"):
        sys.stdout.write(_usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        sys.stderr.write(f"elmo-pipeline: unknown command {name!r}\n\n{_usage()}")
        return 2
    module = importlib.import_module(f"elmo_pipeline.commands.{COMMANDS[name][0]}")
    try:
        result = module.main(rest)
    except KeyboardInterrupt as err:  # Ctrl-C, or SIGTERM where a command turns it into one: one line
        if debug:
            raise
        terminated = isinstance(err, Terminated)
        sys.stderr.write(f"elmo-pipeline {name}: stopped by {'SIGTERM' if terminated else 'Ctrl-C'}\n")
        return 128 + (signal.SIGTERM if terminated else signal.SIGINT)
    except Exception as err:
        if debug or not is_reported(err):
            raise
        sys.stderr.write(f"elmo-pipeline {name}: error: {err}\n")
        if not isinstance(err, UserError):  # a builtin error: where it came from may matter
            sys.stderr.write("(elmo-pipeline --debug ... or ELMO_PIPELINE_DEBUG=1 shows the traceback)\n")
        return 1
    return int(result or 0)


if __name__ == "__main__":
    raise SystemExit(main())
