"""A trained translation model loaded for ``elmo-pipeline translate`` (``commands/translate.py``).

``seq2seq.pt`` (written by :meth:`Seq2SeqSystem.write_translator`) holds the model, its vocabularies,
the beam size, length normalisation and shallow fusion's lambda chosen on val, and the identity of
its fusion LM. A fusion model reads its LM again from the name it was trained with (or another path,
after a move); the LM is checked against what ``seq2seq.pt`` records of the LM of training (its
config, a sha256 of its weights, the ids of the target words in its vocabulary): another LM is
refused, naming what differs.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import torch

from elmo_pipeline.errors import (
    InputError,
    MissingFileError,
    UnsafeCheckpointError,
)
from elmo_pipeline.models.bilm import check_finite
from elmo_pipeline.models.seq2seq import Seq2Seq, Seq2SeqConfig
from elmo_pipeline.models.source import BiLMSource
from elmo_pipeline.models.target_lm import TargetLM
from elmo_pipeline.models.weights_only import first_line, load_weights_only
from elmo_pipeline.text.vocab import Vocabulary

log = logging.getLogger(__name__)


SAVED_KEYS = ("config", "lm", "lm_weight", "beam", "length_penalty", "source_words", "target_words", "state_dict")
DAMAGED = "the file is damaged or not a seq2seq.pt; give the run folder of `elmo-pipeline seq2seq`"


def _read_saved(path: Path) -> dict[str, Any]:
    """The dict of a ``seq2seq.pt``, loaded weights-only; anything else is one line naming the file."""
    saved = load_weights_only(
        path, f"--model {path}:", damaged_fix=DAMAGED, unsafe_fix="Use only models you trained or trust"
    )
    missing = [k for k in SAVED_KEYS if not isinstance(saved, dict) or k not in saved]
    if missing:
        raise InputError(
            f"--model {path}: not a seq2seq.pt of elmo-pipeline (no {', '.join(missing[:3])}); give the run folder "
            "of `elmo-pipeline seq2seq`"
        )
    _check_fields(path, saved)
    return saved


def _check_fields(path: Path, saved: dict[str, Any]) -> None:
    """Refuse a ``seq2seq.pt`` whose fields have the wrong types or values (a crafted or damaged file)."""

    def is_words(value: object) -> bool:
        return isinstance(value, list) and all(isinstance(w, str) for w in value)

    def is_number(value: object) -> bool:
        return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)

    state = saved["state_dict"]
    checks = {
        "config": (isinstance(saved["config"], dict), "a dict"),
        "state_dict": (
            isinstance(state, dict)
            and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()),
            "a dict of tensors",
        ),
        "source_words": (is_words(saved["source_words"]), "a list of words"),
        "target_words": (is_words(saved["target_words"]), "a list of words"),
        "beam": (
            isinstance(saved["beam"], int) and not isinstance(saved["beam"], bool) and saved["beam"] >= 1,
            "an int >= 1",
        ),
        "lm_weight": (is_number(saved["lm_weight"]) and saved["lm_weight"] >= 0, "a finite number >= 0"),
        "length_penalty": (is_number(saved["length_penalty"]), "a finite number"),
        "lm": (saved["lm"] is None or isinstance(saved["lm"], str), "an LM's name or None"),
    }
    for key, (ok, want) in checks.items():
        if not ok:
            value = saved[key]
            shown = repr(value)[:60] if isinstance(value, int | float | str) else type(value).__name__
            if key == "state_dict" and isinstance(value, dict):  # name the entry that is not a tensor
                bad = next(k for k, v in value.items() if not (isinstance(k, str) and isinstance(v, torch.Tensor)))
                shown = f"{type(value[bad]).__name__} at {str(bad)[:60]!r}"
            raise InputError(f"--model {path}: its {key} should be {want}, got {shown}; {DAMAGED}")


def _load_lm(path: Path, saved: dict[str, Any], lm: str | None) -> TargetLM:
    """The target LM: ``--lm`` when given, else the one ``seq2seq.pt`` names; checked to be the LM of training."""
    name = lm or saved["lm"]
    where = f"--lm {name}" if lm else f"the LM {name} that {path} names (pass --lm if it moved)"
    try:
        bilm, lm_vocabulary = BiLMSource.parse(name).load_with_vocab()
        target_lm = TargetLM(bilm, lm_vocabulary, saved["target_words"])
    except (ValueError, OSError) as err:  # not there, not an LM, no softmax: named as the option
        kind = (
            UnsafeCheckpointError
            if isinstance(err, UnsafeCheckpointError)
            else MissingFileError
            if isinstance(err, FileNotFoundError)
            else InputError
        )
        raise kind(f"{where}: {err}") from None
    if saved["lm"] is None:  # a model trained without an LM: --lm joins it at search only
        log.info(
            "translate: %s was trained without an LM; %s joins at search only (shallow fusion, --lm-weight)", path, lm
        )
    elif (differences := _lm_differences(saved, target_lm)) is None:
        log.warning("%s: made before seq2seq.pt recorded its LM; cannot check that %s is the same LM", path, name)
    elif differences and lm:
        raise InputError(
            f"--lm {lm}: not the LM this model was trained with ({saved['lm']}): {'; '.join(differences)}, and the "
            "translations would differ from the run's. Pass the LM of the run, or retrain with this one"
        )
    elif differences:
        raise InputError(
            f"the LM {name} that {path} names has changed since training: {'; '.join(differences)}, and the "
            "translations would differ from the run's. Pass --lm with the LM the model was trained with, or retrain"
        )
    log.log(
        logging.WARNING if target_lm.oov else logging.INFO,
        "translate: %d of the %d target words are outside the vocabulary of the LM %s (they take its <UNK> score)",
        target_lm.oov,
        len(saved["target_words"]),
        name,
    )
    return target_lm


def _lm_differences(saved: dict[str, Any], target_lm: TargetLM) -> list[str] | None:
    """What differs between ``target_lm`` and the LM of training (empty: none; None: the file records no LM)."""
    record = saved.get("lm_identity")
    if isinstance(record, dict):
        now = target_lm.identity()
        differences = []
        config, trained = now["config"], record.get("config")
        if config != trained:
            fields = [k for k in config if not isinstance(trained, dict) or trained.get(k) != config[k]]
            shown = ", ".join(
                f"{k} {config[k]!r}, trained with {trained.get(k)!r}" if isinstance(trained, dict) else k
                for k in fields[:3]
            )
            differences.append(f"its config differs ({shown or 'other fields'})")
        if now["weights"] != record.get("weights"):
            differences.append("its weights differ")
        ids = record.get("target_ids")
        if ids != now["target_ids"]:
            moved = (
                sum(a != b for a, b in zip(ids, now["target_ids"], strict=True))
                if isinstance(ids, list) and len(ids) == len(now["target_ids"])
                else len(now["target_ids"])
            )
            differences.append(
                f"its vocabulary differs ({moved} of the {len(now['target_ids'])} target words have another id in it; "
                f"{now['oov']} are outside it, {record.get('oov')} were at training)"
            )
        return differences
    fingerprint = saved.get("lm_fingerprint")
    if fingerprint is None:
        return None
    return [] if fingerprint == target_lm.fingerprint() else ["its weights or its vocabulary differ"]


def load_translator(path: str | Path, lm: str | None = None) -> tuple[Seq2Seq, dict]:
    """The model of a ``seq2seq.pt`` (or of the run folder holding it), in eval mode, and the file's settings."""
    path = Path(path)
    if path.is_dir():
        path = path / "seq2seq.pt"
    if not path.is_file():
        raise MissingFileError(f"--model {path}: no such file; give a run folder of `elmo-pipeline seq2seq`")
    saved = _read_saved(path)
    try:
        config = Seq2SeqConfig(**saved["config"])
    except TypeError as err:
        raise InputError(f"--model {path}: its config does not fit this elmo-pipeline ({err})") from None
    for key, size in (("source_words", config.source_vocab_size), ("target_words", config.target_vocab_size)):
        if len(saved[key]) != size:
            raise InputError(f"--model {path}: {len(saved[key])} {key} for a model of {size}; {DAMAGED}")
    try:
        Vocabulary(saved["source_words"])
    except ValueError as err:
        raise InputError(f"--model {path}: its source_words are not a vocabulary ({err}); {DAMAGED}") from None
    for name, tensor in saved["state_dict"].items():
        check_finite(tensor, f"--model {path}: {name}")
    target_lm = None
    if lm or saved["lm"]:  # cold fusion needs it; shallow fusion (--lm-weight) uses it
        target_lm = _load_lm(path, saved, lm)
    model = Seq2Seq(config, target_lm)
    try:
        result = model.load_state_dict(saved["state_dict"], strict=False)
    except RuntimeError as err:  # a tensor of another shape: name it, not the header of torch's list
        mismatch = next((line.strip() for line in str(err).splitlines() if "size mismatch" in line), None)
        raise InputError(
            f"--model {path}: the weights do not fit its config ({(mismatch or first_line(err))[:200]}); {DAMAGED}"
        ) from None
    missing = [k for k in result.missing_keys if not k.startswith("lm.")]
    if missing or result.unexpected_keys:
        raise InputError(
            f"--model {path}: the weights do not fit the model (missing {missing[:3]}, unexpected "
            f"{result.unexpected_keys[:3]}); {DAMAGED}"
        )
    return model.eval(), saved
