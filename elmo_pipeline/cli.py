"""`elmo-pipeline <command>`: one entry point, each command in its own module (imported lazily)."""

from __future__ import annotations

import importlib
import sys

# command -> ("module:function", one-line help). Each function takes the remaining argv.
COMMANDS: dict[str, tuple[str, str]] = {
    "reproduce": ("elmo_pipeline.reproduce:main", "the paper's results table: pretrain, transfer, seeds (resumable)"),
    "pretrain": ("elmo_pipeline.systems.pretrain_cli:main", "pretrain a biLM (LightningCLI: fit, validate, ...)"),
    "finetune": ("elmo_pipeline.systems.finetune_cli:main", "train a task head with or without ELMo (LightningCLI)"),
    "vocab": ("elmo_pipeline.data.lm:vocab_main", "build a word vocabulary from a corpus"),
    "curves": ("elmo_pipeline.analysis.curves:main", "plot a pretraining run's learning curves"),
    "bench": ("elmo_pipeline.bench:main", "benchmark training throughput, memory and GFLOP/s"),
    "embed": ("elmo_pipeline.embed:main", "embed a file of sentences into HDF5 (bilm-tf layout) with a biLM"),
    "generate": ("elmo_pipeline.analysis.generate:main", "sample text from a biLM's forward language model"),
    "cells": ("elmo_pipeline.analysis.cells:main", "find and plot interpretable units of a biLM over a text"),
    "sentiment-neuron": ("elmo_pipeline.analysis.sentiment_neuron:main", "SST sentiment from a biLM's units (L1)"),
    "ablation": ("elmo_pipeline.analysis.ablation:main", "train one biLM per recurrent cell, compare ppl/speed"),
}


def _usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"  {name:<{width}}  {help_}" for name, (_, help_) in COMMANDS.items()]
    return "usage: elmo-pipeline <command> [options]\n\ncommands:\n" + "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        sys.stdout.write(_usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        sys.stderr.write(f"elmo-pipeline: unknown command {name!r}\n\n{_usage()}")
        return 2
    module, func = COMMANDS[name][0].split(":")
    result = getattr(importlib.import_module(module), func)(rest)
    return int(result or 0)


if __name__ == "__main__":
    raise SystemExit(main())
