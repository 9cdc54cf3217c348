"""Every way a user names a biLM, parsed in one place: ``--bilm`` and ``--data.elmo`` mean the same everywhere.

A biLM is named by one of:

* an **export folder**, written by ``elmo-pipeline pretrain`` (``config.json`` + ``weights.pt``, and
  ``vocab.txt`` when it has a softmax);
* a folder holding the **published** ``options.json`` + ``weights.hdf5``;
* the published files by name: ``OPTIONS,WEIGHTS`` (a comma between the two paths), or the pair
  ``(options, weights)`` from Python;
* ``random:`` before any of these: the **random control**, a biLM of the same configuration with
  random weights (seeded), whose files are read only for that configuration.

    source = BiLMSource.parse("random:runs/pretrain/tiny/export")
    source.arm            # "random_bilm": no file is read
    source.config()       # the BiLMConfig: config.json or options.json only, no weights
    source.load(seed=0)   # the biLM (eval mode), frozen if asked
    source.identity()     # a hash of the weight files: a retrained biLM changes it
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import torch

from elmo_pipeline.errors import InputError, MissingFileError
from elmo_pipeline.models.bilm import BiLM
from elmo_pipeline.models.bilm_tf import OPTIONS_FILE, WEIGHTS_FILE, load_bilm_tf, read_options
from elmo_pipeline.models.config import BiLMConfig
from elmo_pipeline.models.export_folder import load_export, read_export_config
from elmo_pipeline.text.vocab import Vocabulary

RANDOM_PREFIX = "random:"
EXPORT_FILES = ("config.json", "weights.pt")
FORMS = (
    "an export folder (config.json + weights.pt, from `elmo-pipeline pretrain`), a folder with the published "
    f"{OPTIONS_FILE} + {WEIGHTS_FILE}, OPTIONS,WEIGHTS, or random: before any of these"
)


BILM_HELP = (  # the --bilm help of every command that takes one
    "the biLM: an export folder of `elmo-pipeline pretrain`, a folder with the published options.json + "
    "weights.hdf5, OPTIONS,WEIGHTS, or random: before any of these (the random control)"
)


@dataclass(frozen=True)
class BiLMSource:
    """A parsed biLM name. :meth:`config`, :meth:`load` and :meth:`identity` read its files; parsing does not.

    Attributes:
        paths: the export folder or published folder (one path), or ``(options.json, weights.hdf5)``.
        random: the random control: the configuration of ``paths`` with random weights.
    """

    paths: tuple[Path, ...]
    random: bool = False

    @classmethod
    def parse(cls, spec: str | Path | tuple[str | Path, str | Path] | BiLMSource) -> BiLMSource:
        """Parse what the user wrote (see the module docstring for the forms).

        Reads no file, except to tell a path that holds a comma from ``OPTIONS,WEIGHTS``.
        """
        if isinstance(spec, BiLMSource):
            return spec
        if isinstance(spec, tuple | list):
            if len(spec) != 2:
                raise InputError(f"biLM: expected (options.json, weights.hdf5), got {spec!r}")
            return cls((Path(spec[0]), Path(spec[1])))
        text = str(spec).strip()
        random = text.startswith(RANDOM_PREFIX)
        text = text.removeprefix(RANDOM_PREFIX)
        if text and "," in text and Path(text).exists():  # a folder whose name holds a comma
            return cls((Path(text),), random)
        parts = [part.strip() for part in text.split(",")]
        if not text or len(parts) > 2 or not all(parts):
            raise InputError(f"biLM {spec!r}: expected {FORMS}")
        return cls(tuple(Path(part) for part in parts), random)

    def __str__(self) -> str:
        return (RANDOM_PREFIX if self.random else "") + ",".join(str(p) for p in self.paths)

    @property
    def arm(self) -> str:
        """The arm of the results table this biLM makes: ``elmo``, or ``random_bilm`` for the control."""
        return "random_bilm" if self.random else "elmo"

    # ---- which files ---------------------------------------------------------------------------
    def _export_dir(self) -> Path | None:
        if len(self.paths) == 1 and all((self.paths[0] / name).is_file() for name in EXPORT_FILES):
            return self.paths[0]
        return None

    def _published(self) -> tuple[Path, Path] | None:
        if len(self.paths) == 2:
            return self.paths[0], self.paths[1]
        folder = self.paths[0]
        if (folder / OPTIONS_FILE).is_file() and (folder / WEIGHTS_FILE).is_file():
            return folder / OPTIONS_FILE, folder / WEIGHTS_FILE
        return None

    def files(self) -> list[Path]:
        """The files that define the biLM's configuration and weights (what :meth:`identity` hashes)."""
        export = self._export_dir()
        if export is not None:
            return [export / name for name in EXPORT_FILES]
        published = self._published()
        if published is not None:
            missing = [p for p in published if not p.is_file()]
            if missing:
                raise MissingFileError(f"biLM {self}: no such file {missing[0]}; expected {FORMS}")
            return list(published)
        raise MissingFileError(
            f"no biLM at {self.paths[0]}: neither an export folder (config.json + weights.pt, from `elmo-pipeline "
            f"pretrain`) nor a folder with the published {OPTIONS_FILE} + {WEIGHTS_FILE}; pass one of these, "
            "OPTIONS,WEIGHTS for published files with other names, or random: before any of these"
        )

    # ---- what it is --------------------------------------------------------------------------
    def config(self) -> BiLMConfig:
        """The biLM's configuration, read from ``config.json`` or ``options.json``; no weights are loaded."""
        self.files()  # a clear error if the files are not there
        export = self._export_dir()
        if export is not None:
            return read_export_config(export)
        options, _ = self._published()  # type: ignore[misc]
        return read_options(options)

    def vocabulary(self) -> Vocabulary | None:
        """The softmax vocabulary (an export folder's ``vocab.txt``), without loading weights; None if there is none."""
        self.files()
        export = self._export_dir()
        path = export / "vocab.txt" if export is not None else None
        return Vocabulary.load(path) if path is not None and path.is_file() else None

    def load(self, seed: int = 0, frozen: bool = False, map_location: str | torch.device = "cpu") -> BiLM:
        """The biLM in eval mode (``frozen``: without gradients). The random control draws its weights from ``seed``."""
        if self.random:
            with torch.random.fork_rng():
                torch.manual_seed(seed)
                bilm = BiLM(self.config())
            bilm = bilm.to(map_location)
        else:
            bilm = self.load_with_vocab(map_location=map_location)[0]
        bilm.eval()
        return bilm.requires_grad_(False) if frozen else bilm

    def load_with_vocab(
        self, seed: int = 0, map_location: str | torch.device = "cpu"
    ) -> tuple[BiLM, Vocabulary | None]:
        """The biLM (eval mode) and its softmax vocabulary: None for the published files, which have none.

        The random control has random weights (softmax included) over its template's vocabulary.
        """
        if self.random:
            return self.load(seed=seed, map_location=map_location), self.vocabulary()
        self.files()
        export = self._export_dir()
        if export is not None:
            return load_export(export, map_location=map_location)
        options, weights = self._published()  # type: ignore[misc]
        return load_bilm_tf(options, weights).to(map_location).eval(), None

    def identity(self) -> str:
        """A hash of the files that define the biLM: it changes when the biLM is retrained in place.

        The random control has its template's identity (its arm tells it apart).
        """
        digest = hashlib.sha256()
        for file in self.files():
            with open(file, "rb") as f:
                while chunk := f.read(1 << 22):
                    digest.update(chunk)
        return digest.hexdigest()[:16]


def arm_of(bilm: str | BiLMSource | None) -> str:
    """``baseline`` without a biLM, else the source's arm (``elmo`` or ``random_bilm``); reads no file."""
    return "baseline" if not bilm else BiLMSource.parse(bilm).arm


def load_bilm(spec: str | Path | tuple[str | Path, str | Path] | BiLMSource, map_location: str = "cpu") -> BiLM:
    """Shorthand for ``BiLMSource.parse(spec).load()``: the biLM that ``spec`` names, in eval mode."""
    return BiLMSource.parse(spec).load(map_location=map_location)
