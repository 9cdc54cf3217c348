"""`elmo-pipeline <command>`: one entry point, each command in its own module (imported lazily)."""

from __future__ import annotations

import importlib
import os
import signal
import sys

from elmo_pipeline.errors import UserError, debug_requested, is_reported
from elmo_pipeline.files import Terminated

# command -> ("module:function", one-line help). Each function takes the remaining argv.
COMMANDS: dict[str, tuple[str, str]] = {
    "reproduce": ("elmo_pipeline.reproduce:main", "the paper's results table: pretrain, transfer, seeds (resumable)"),
    "pretrain": ("elmo_pipeline.commands.pretrain:main", "pretrain a biLM (LightningCLI: fit, validate, ...)"),
    "finetune": ("elmo_pipeline.systems.finetune_cli:main", "train a task head with or without ELMo (LightningCLI)"),
    "vocab": ("elmo_pipeline.commands.vocab:main", "build a word vocabulary from a corpus"),
    "curves": ("elmo_pipeline.commands.curves:main", "plot a pretraining run's learning curves"),
    "bench": ("elmo_pipeline.commands.bench:main", "benchmark training throughput, memory and GFLOP/s"),
    "embed": ("elmo_pipeline.commands.embed:main", "embed a file of sentences into HDF5 (bilm-tf layout) with a biLM"),
    "merge-embeddings": (
        "elmo_pipeline.commands.merge_embeddings:main",
        "merge the shards of `embed --shard-lines` into one file",
    ),
    "export": (
        "elmo_pipeline.commands.export:main",
        "write a biLM as the published options.json + weights.hdf5, or back",
    ),
    "generate": ("elmo_pipeline.commands.generate:main", "sample text from a biLM's forward language model"),
    "units": ("elmo_pipeline.commands.units:main", "find and plot interpretable units of a biLM over a text"),
    "cells": ("elmo_pipeline.commands.units:main", "the same as `units` (its former name)"),
    "sentiment-neuron": ("elmo_pipeline.commands.sentiment_neuron:main", "SST sentiment from a biLM's units (L1)"),
    "ablation": ("elmo_pipeline.commands.ablation:main", "train one biLM per recurrent cell, compare ppl/speed"),
    "seq2seq": ("elmo_pipeline.commands.seq2seq:main", "train a translation model, with or without LM fusion"),
    "translate": ("elmo_pipeline.commands.translate:main", "translate a file with a model trained by `seq2seq`"),
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
    module, func = COMMANDS[name][0].split(":")
    try:
        result = getattr(importlib.import_module(module), func)(rest)
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
