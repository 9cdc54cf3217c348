"""`elmo-pipeline merge-embeddings`: the shards of `embed --shard-lines` as one HDF5 file (the work:
:func:`elmo_pipeline.embed_shards.merge_shards`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from elmo_pipeline.embed_shards import merge_shards
from elmo_pipeline.errors import UserError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="elmo-pipeline merge-embeddings",
        description="Merge the shards of `embed --shard-lines` into one HDF5 file, as a one-process embed writes.",
    )
    parser.add_argument("folder", type=Path, help="the --output folder of `embed --shard-lines`")
    parser.add_argument("--output", required=True, type=Path, help="HDF5 file to write")
    parser.add_argument("--overwrite", action="store_true", help="replace --output if it exists")
    args = parser.parse_args(argv)
    try:
        path = merge_shards(args.folder, args.output, args.overwrite)
    except (UserError, ValueError, OSError) as err:
        sys.stderr.write(f"elmo-pipeline merge-embeddings: error: {err}\n")
        return 1
    print(f"wrote {path}")
    return 0
