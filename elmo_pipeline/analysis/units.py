"""`elmo-pipeline units`: interpretable units of the biLM (after Karpathy, Johnson & Fei-Fei 2015).

Runs the biLM over a text and records every LSTM layer's output units: ``L{layer}.{fwd|bwd}.{unit}``,
P units per direction and layer. These are the layer outputs h (for the default LSTMP, the projection
of ``o * tanh(c)``; for the other cells ``h`` itself), the vectors that ELMo hands to downstream tasks,
rather than the internal cell states c that Karpathy et al. plotted. Each unit is then scored against
simple properties of the text by the Pearson correlation of its value with the property over all
tokens:

    inside_quotes    1 from an opening quote up to (not including) its closing quote
    inside_brackets  1 while at least one ( [ { is open (the opening bracket included)
    position         index of the token in its sentence (0 at the start of a line and after . ! ?)
    capitalised      1 if the token starts with an upper-case letter
    digits           1 if the token holds a digit

Outputs in ``--out``: ``cells.html`` (the text coloured by each chosen unit, and the ranking),
``cell_<unit>.png`` (the same colouring as a picture), ``cells_heatmap.png`` (chosen units x the
first tokens), ``ranking.md`` and ``ranking.json``.

    elmo-pipeline units --bilm runs/pretrain/tiny_shared_lm/export --text my.txt --out runs/cells
"""

from __future__ import annotations

import argparse
import html
import json
import logging
from pathlib import Path

import numpy as np

from elmo_pipeline.analysis.common import batched_outputs, load_for_inference, require_at_least_one
from elmo_pipeline.data.lm import TOKENIZERS
from elmo_pipeline.errors import InputError, MissingFileError
from elmo_pipeline.models.bilm import BiLM

log = logging.getLogger(__name__)

PROPERTIES = ("inside_quotes", "inside_brackets", "position", "capitalised", "digits")
_OPEN_QUOTES, _CLOSE_QUOTES, _TOGGLE_QUOTES = {"``", "\u201c"}, {"''", "\u201d"}, {'"'}
_OPEN_BRACKETS, _CLOSE_BRACKETS = {"(", "[", "{"}, {")", "]", "}"}
_SENTENCE_END = {".", "!", "?"}


def text_properties(tokens: list[str]) -> dict[str, np.ndarray]:
    """Each property's value (T,) at each token of one sequence, as a forward reader knows it after the token."""
    values = {name: np.zeros(len(tokens)) for name in PROPERTIES}
    quoted, depth, position = False, 0, 0
    for t, tok in enumerate(tokens):
        if tok in _OPEN_QUOTES or (tok in _TOGGLE_QUOTES and not quoted):
            quoted = True
        elif tok in _CLOSE_QUOTES or tok in _TOGGLE_QUOTES:
            quoted = False
        depth += tok in _OPEN_BRACKETS
        values["inside_quotes"][t] = quoted
        values["inside_brackets"][t] = depth > 0
        depth = max(0, depth - (tok in _CLOSE_BRACKETS))
        values["position"][t] = position
        position = 0 if tok in _SENTENCE_END else position + 1
        values["capitalised"][t] = tok[:1].isupper()
        values["digits"][t] = any(ch.isdigit() for ch in tok)
    return values


def read_sequences(path: str | Path, tokenizer: str = "regex", max_tokens: int = 100, max_lines: int = 200):
    """Token sequences of a text file: each non-blank line, cut into pieces of at most ``max_tokens``.

    The file is read line by line up to ``max_lines`` sequences (a whole corpus may be given); a byte
    that is not UTF-8 is named with its line and column.
    """
    path = Path(path)
    if path.is_dir():
        raise InputError(f"--text {path} is a folder; give a UTF-8 text file")
    if not path.is_file():
        raise MissingFileError(f"--text {path}: no such file")
    sequences: list[list[str]] = []
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise InputError(
                    f"{path}:{number}: not UTF-8 (byte 0x{raw[err.start]:02x} at column {err.start + 1}); re-encode "
                    "the file as UTF-8, e.g. `iconv -f latin1 -t utf-8` (--text)"
                ) from None
            tokens = TOKENIZERS[tokenizer](line)
            sequences += [tokens[i : i + max_tokens] for i in range(0, len(tokens), max_tokens)]
            if len(sequences) >= max_lines:
                break
    if not sequences:
        raise InputError(f"--text {path} holds no text")
    return sequences[:max_lines]


def unit_names(bilm: BiLM) -> list[str]:
    """Names of the columns of :func:`unit_activations`: ``L{layer}.{fwd|bwd}.{unit}``, layer-major."""
    P, L = bilm.config.projection_dim, bilm.config.num_layers
    return [f"L{layer}.{d}.{u}" for layer in range(1, L + 1) for d in ("fwd", "bwd") for u in range(P)]


def unit_activations(bilm: BiLM, sequences: list[list[str]], batch_size: int = 32) -> list[np.ndarray]:
    """Every LSTM layer output unit at every token: one (T_i, L * 2P) array per sequence."""
    out: list[np.ndarray | None] = [None] * len(sequences)
    for index, result in batched_outputs(bilm, sequences, batch_size):
        layers = np.concatenate([a.float().numpy() for a in result.activations[1:]], axis=-1)  # (B, T, L*2P)
        for row, i in enumerate(index):
            out[i] = layers[row, 1 : 1 + len(sequences[i])]  # (T_i, L*2P), boundaries dropped
    return out  # type: ignore[return-value]


def rank_units(activations: np.ndarray, properties: dict[str, np.ndarray]) -> dict[str, list[tuple[int, float]]]:
    """Units by |Pearson r| with each property, best first; a property constant over the text is left out.

    Args:
        activations: (N, U) unit values at N tokens.
        properties: name -> (N,) property values.

    Returns:
        name -> [(unit index, r), ...] for all U units.
    """
    a = activations - activations.mean(axis=0)  # (N, U)
    a_norm = np.linalg.norm(a, axis=0)  # (U,)
    ranking = {}
    for name, values in properties.items():
        p = values - values.mean()  # (N,)
        if np.linalg.norm(p) == 0:
            log.warning("cells: %s is constant over this text; it is not ranked", name)
            continue
        r = (a.T @ p) / (np.where(a_norm > 0, a_norm, np.inf) * np.linalg.norm(p))  # (U,)
        order = np.argsort(-np.abs(r), kind="stable")
        ranking[name] = [(int(u), float(r[u])) for u in order]
    return ranking


def _wrap(sequences: list[list[str]], width: int, max_tokens: int) -> list[list[tuple[int, str]]]:
    """Lines of (flat token index, token) at most ``width`` characters wide; each sequence starts a line."""
    lines, flat = [], 0
    for tokens in sequences:
        line, used = [], 0
        for tok in tokens:
            if flat >= max_tokens:
                break
            if line and used + len(tok) > width:
                lines.append(line)
                line, used = [], 0
            line.append((flat, tok))
            used += len(tok) + 1
            flat += 1
        if line:
            lines.append(line)
        if flat >= max_tokens:
            break
    return lines


def plot_text(sequences: list[list[str]], values: np.ndarray, path: Path, title: str, max_tokens: int = 400) -> None:
    """The text with each token's background coloured by ``values`` (flat, one per token): red +, blue -.

    Pass values centred on the unit's mean: a unit's offset would otherwise paint every token alike.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    width = 100
    lines = _wrap(sequences, width, max_tokens)
    shown = np.array([values[i] for line in lines for i, _ in line])
    scale = float(np.abs(shown).max()) or 1.0
    cmap = plt.get_cmap("coolwarm")
    fig = plt.figure(figsize=(width * 0.075, 0.3 + 0.2 * len(lines)))
    ax = fig.add_axes((0.0, 0.0, 1.0, 1.0 - 0.3 / (0.3 + 0.2 * len(lines))))
    ax.set_xlim(-0.5, width + 0.5)
    ax.set_ylim(len(lines), 0)
    ax.axis("off")
    for y, line in enumerate(lines):
        x = 0.0
        for i, tok in line:
            colour = cmap(0.5 + 0.5 * values[i] / scale)
            ax.add_patch(Rectangle((x - 0.2, y + 0.08), len(tok) + 0.4, 0.84, color=colour, linewidth=0))
            ax.text(x, y + 0.5, tok, va="center", ha="left", family="monospace", fontsize=8)
            x += len(tok) + 1
    fig.suptitle(f"{title}   (minus its mean; red +, blue -, |max| {scale:.2f})", fontsize=9, y=0.995, va="top")
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_heatmap(tokens: list[str], values: np.ndarray, names: list[str], path: Path) -> None:
    """Chosen units (rows) x the first tokens (columns), each row scaled to its own |max|."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scaled = values / np.maximum(np.abs(values).max(axis=1, keepdims=True), 1e-9)  # (U, N)
    fig, ax = plt.subplots(figsize=(0.16 * len(tokens) + 1.5, 0.35 * len(names) + 1.2))
    ax.imshow(scaled, cmap="coolwarm", vmin=-1, vmax=1, aspect="auto", interpolation="nearest")
    ax.set_xticks(range(len(tokens)), tokens, rotation=90, fontsize=7, family="monospace")
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.set_title("unit activations minus their mean, each row scaled to its |max| (red +, blue -)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _html_text(sequences: list[list[str]], values: np.ndarray) -> str:
    scale = float(np.abs(values).max()) or 1.0
    parts, flat = [], 0
    for tokens in sequences:
        spans = []
        for tok in tokens:
            v = values[flat] / scale
            rgb = "214,39,40" if v > 0 else "31,119,180"
            style = f"background:rgba({rgb},{abs(v):.2f})"
            spans.append(f'<span style="{style}" title="{values[flat]:.3f}">{html.escape(tok)}</span>')
            flat += 1
        parts.append("<p>" + " ".join(spans) + "</p>")
    return "\n".join(parts)


def analyze(
    bilm: BiLM,
    sequences: list[list[str]],
    out_dir: str | Path,
    cells: list[str] | None = None,
    top: int = 5,
    batch_size: int = 32,
) -> dict[str, list[tuple[str, float]]]:
    """Rank the biLM's units against the text properties and write the pages and pictures to ``out_dir``.

    Args:
        bilm: the biLM, in eval mode.
        sequences: token sequences of the text.
        out_dir: where to write (created).
        cells: units to show (names as :func:`unit_names`); default: the best unit of each property.
        top: units per property in the ranking tables.
        batch_size: sequences per biLM call.

    Returns:
        property -> the ``top`` best (unit name, r).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    names = unit_names(bilm)
    per_sequence = unit_activations(bilm, sequences, batch_size)
    acts = np.concatenate(per_sequence, axis=0)  # (N, U)
    per_property = [text_properties(tokens) for tokens in sequences]
    props = {p: np.concatenate([values[p] for values in per_property]) for p in PROPERTIES}  # name -> (N,)
    full = rank_units(acts, props)
    ranking = {p: [(names[u], r) for u, r in order[:top]] for p, order in full.items()}

    chosen_for: dict[str, str] = {}  # unit -> the property it was chosen as best for
    if cells is None:
        for prop, units in ranking.items():
            chosen_for.setdefault(units[0][0], prop)
        cells = list(chosen_for)
    unknown = [c for c in cells if c not in names]
    if unknown:
        raise ValueError(f"cells: unknown units {unknown}; names look like L1.fwd.0 .. {names[-1]} (--cells)")
    column = {name: i for i, name in enumerate(names)}
    r_of = {p: dict((names[u], r) for u, r in order) for p, order in full.items()}

    sections = []
    for cell in cells:
        values = acts[:, column[cell]] - acts[:, column[cell]].mean()  # (N,), centred
        best = chosen_for.get(cell) or (max(r_of, key=lambda p: abs(r_of[p][cell])) if r_of else None)
        title = f"{cell}" + (f": tracks {best} (r = {r_of[best][cell]:+.2f})" if best else "")
        png = f"cell_{cell}.png"
        plot_text(sequences, values, out_dir / png, title)
        scores = ", ".join(f"{p} {r_of[p][cell]:+.2f}" for p in r_of)
        sections.append(
            f"<h2>{html.escape(title)}</h2><p class='scores'>r with each property: {scores}</p>"
            f"<img src='{png}' alt='{cell}'>\n<div class='text'>{_html_text(sequences, values)}</div>"
        )
    first = [tok for tokens in sequences for tok in tokens][:80]
    centred = np.stack([acts[:, column[c]] - acts[:, column[c]].mean() for c in cells])  # (cells, N)
    labels = [f"{c} ({chosen_for[c]})" if c in chosen_for else c for c in cells]
    plot_heatmap(first, centred[:, : len(first)], labels, out_dir / "cells_heatmap.png")

    table = ["| property | " + " | ".join(f"#{k + 1} unit (r)" for k in range(top)) + " |"]
    table.append("|---" * (top + 1) + "|")
    table += [f"| {p} | " + " | ".join(f"{u} ({r:+.2f})" for u, r in units) + " |" for p, units in ranking.items()]
    (out_dir / "ranking.md").write_text(
        f"Units of the biLM ranked by |Pearson r| with each property over {len(acts)} tokens.\n\n"
        + "\n".join(table)
        + "\n"
    )
    (out_dir / "ranking.json").write_text(
        json.dumps({"tokens": len(acts), "ranking": {p: [[u, r] for u, r in v] for p, v in ranking.items()}}, indent=1)
    )
    rows = "".join(
        f"<tr><td>{p}</td>" + "".join(f"<td>{u} ({r:+.2f})</td>" for u, r in units) + "</tr>"
        for p, units in ranking.items()
    )
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>biLM cells</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:auto}} .text{{font-family:monospace;line-height:1.6}}
td{{padding:2px 8px}} img{{max-width:100%}}</style></head><body>
<h1>Interpretable units of the biLM</h1>
<p>{len(acts)} tokens in {len(sequences)} sequences. Units ranked by |Pearson r| with each property.</p>
<table><tr><th>property</th>{"".join(f"<th>#{k + 1}</th>" for k in range(top))}</tr>{rows}</table>
<img src="cells_heatmap.png" alt="heatmap">
{"".join(sections)}
</body></html>
"""
    (out_dir / "cells.html").write_text(page, encoding="utf-8")
    return ranking


def run(args: argparse.Namespace) -> int:
    """Run ``elmo-pipeline units`` with its parsed options (``commands/units.py``)."""
    require_at_least_one(args, "max_lines", "max_tokens", "top")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    sequences = read_sequences(args.text, args.tokenizer, args.max_tokens, args.max_lines)  # before the biLM loads
    bilm, _ = load_for_inference(args.bilm)
    cells = args.cells.split(",") if args.cells else None
    ranking = analyze(bilm, sequences, args.out, cells, args.top)
    for prop, units in ranking.items():
        print(f"{prop:16s} " + "  ".join(f"{u} ({r:+.2f})" for u, r in units))
    print(f"wrote {Path(args.out) / 'cells.html'}")
    return 0
