"""Val BLEU of a trained translation model with its output <UNK> kept, copied from the aligned source word, or deleted.

    .venv/bin/python benchmarks/unk_modes.py runs/unk/logs/version_0/checkpoints/best-*.ckpt [--split val]

One beam search per sentence (the run's beam and length normalisation, no fusion); the three modes
post-process the same outputs, so they differ only in what replaces ``<UNK>``. Scored with sacrebleu
against the raw references, as the table is. The issue asks to choose on val; ``--split test`` exists
for the one final evaluation of the chosen mode.
"""

from __future__ import annotations

import argparse
import inspect
import json

import torch

from elmo_pipeline.data.translation import TranslationDataModule, read_parallel
from elmo_pipeline.models.search import UNK_WORDS
from elmo_pipeline.systems.checkpoints import load_checkpoint
from elmo_pipeline.systems.seq2seq import Seq2SeqSystem, corpus_bleu


def load_run(path: str, data_root: str, fusion: str | None = None) -> tuple[Seq2SeqSystem, TranslationDataModule]:
    """A trained translation model from its Lightning checkpoint, with Multi30k read as it was trained
    (its LM fixes the target vocabulary). ``fusion`` overrides the checkpoint's (``none``: decode without the LM).
    """
    checkpoint = load_checkpoint(path)
    accepted = inspect.signature(Seq2SeqSystem.__init__).parameters
    hp = {k: v for k, v in checkpoint["hyper_parameters"].items() if k in accepted}
    data = TranslationDataModule(
        data_root=data_root, source_lang="de", target_lang="en", min_count=2, max_target_words=8000,
        batch_size=64, lm=hp.get("lm"),
    )  # fmt: skip
    data.setup("fit")
    hp.update(target_vocabulary=data.target_vocabulary, **({"fusion": fusion} if fusion else {}))
    system = Seq2SeqSystem(**hp)
    system.load_state_dict(checkpoint["state_dict"])
    return system, data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint")
    parser.add_argument("--split", default="val", choices=["val", "test"])
    parser.add_argument("--data-root", default="../shared/data/multi30k")
    args = parser.parse_args()
    system, data = load_run(args.checkpoint, args.data_root, fusion="none")
    found = system.decode(data.source_ids(args.split), system.hparams.beam, 0.0, progress=True)
    stem = f"{args.data_root}/{data.files[args.split]}"
    sources = [s for s, _ in read_parallel(f"{stem}.de.gz", f"{stem}.en.gz")[0]]  # as written: case kept
    unk_id = data.target_vocabulary.index["<UNK>"]
    result = {
        "checkpoint": args.checkpoint,
        "split": args.split,
        "sentences": len(found),
        "output_unk": sum(f.ids.count(unk_id) for f in found),
        "output_words": sum(len(f.ids) for f in found),
    }
    for mode in UNK_WORDS:
        lines = [system.render(f, s, mode) for f, s in zip(found, sources, strict=True)]
        result[f"bleu_{mode}"] = round(corpus_bleu(lines, data.references[args.split])[0], 2)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    main()
