"""The Multi30k fusion table from the runs under results/seq2seq/<arm>/seed<k>/ (written by run.sh).

    .venv/bin/python results/seq2seq/make_table.py            # writes results/seq2seq/table.md
    .venv/bin/python results/seq2seq/make_table.py results/seq2seq_caption_lm   # another folder of runs (run.sh OUT=)

Rows: no fusion and shallow fusion (both from the `none` runs: one model, two decodings) and cold fusion
(the `cold` runs). Test BLEU is mean ± sample std over the seeds present; each run decoded test once.
Examples: test sentences of seed 0 where a fusion changed the no-fusion translation. The picture of val BLEU
per epoch goes to docs/img/seq2seq_val_bleu.png (for another folder: val_bleu.png inside it).
"""

from __future__ import annotations

import gzip
import json
import statistics
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATA = HERE.parents[1].parent / "shared" / "data" / "multi30k"


def mean_std(values: list[float]) -> str:
    if not values:
        return "—"
    if len(values) == 1:
        return f"{values[0]:.2f} (one seed)"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def resumed(record: dict) -> bool:
    """Whether the run's best checkpoint is in a later attempt's folder (logs/version_1 or later)."""
    return "/version_0/" not in record.get("best_checkpoint", "/version_0/")


def main(folder: Path = HERE) -> None:
    runs = {arm: sorted((folder / arm).glob("seed*/results.json")) for arm in ("none", "cold")}
    records = {arm: [json.loads(p.read_text()) for p in paths] for arm, paths in runs.items()}
    rows = [("no fusion", "none", "none"), ("shallow fusion", "none", "shallow"), ("cold fusion", "cold", "cold")]
    lines = [
        "| decoder | seeds | val BLEU | test BLEU (mean ± std) | λ per seed | epochs | fit minutes |",
        "|---|---|---|---|---|---|---|",
    ]
    signature = lm = ppl = None
    for label, arm, decoding in rows:
        found = [r for r in records[arm] if decoding in r.get("decoding", {})]
        if not found:
            lines.append(f"| {label} | 0 | — | — | — | — | — |")
            continue
        d = [r["decoding"][decoding] for r in found]
        signature, lm, ppl = found[0]["bleu_signature"], found[0]["lm"], found[0].get("lm_val_perplexity")
        seeds = ", ".join(str(r["seed"]) for r in found)
        weights = ", ".join(format(x["lm_weight"], "g") for x in d)
        epochs = ", ".join(str(r["epochs"]) for r in found)
        minutes = ", ".join(format(r["fit_seconds"] / 60, ".0f") + ("*" if resumed(r) else "") for r in found)
        val, test = mean_std([x["val_bleu"] for x in d]), mean_std([x["test_bleu"] for x in d])
        if decoding == "shallow" and all(x["lm_weight"] == 0 for x in d):  # val chose no LM: not a row of its own
            lines.append(
                f"| {label} | {seeds} | = no fusion | = no fusion (val chose λ = 0 on every seed) | {weights} | "
                f"{epochs} | {minutes} |"
            )
            continue
        lines.append(f"| {label} | {seeds} | {val} | **{test}** | {weights} | {epochs} | {minutes} |")
    out = ["# Multi30k de→en: no fusion, shallow fusion, cold fusion", "", *lines, ""]
    if any(resumed(r) for arm in records.values() for r in arm):
        out.append("\\* resumed after an interruption: the minutes of the resumed attempt only.\n")
    out.append(f"LM: `{lm}`; its val perplexity over the target vocabulary: {ppl}. BLEU: sacrebleu `{signature}`.")
    out += ["", *significance(records, folder)]
    out += ["", "## Examples (seed 0) where fusion changed the translation", ""]
    out += examples(folder)
    (folder / "table.md").write_text("\n".join(out) + "\n", encoding="utf-8")
    print("\n".join(out))
    picture = HERE.parents[1] / "docs" / "img" / "seq2seq_val_bleu.png" if folder == HERE else folder / "val_bleu.png"
    plot_curves(folder, picture)


def significance(records: dict[str, list[dict]], folder: Path = HERE) -> list[str]:
    """Each fusion arm against no fusion: Welch's t over the seeds' test BLEU, and sacrebleu's paired
    bootstrap over the test sentences of each seed (1,000 resamples)."""
    from sacrebleu.metrics import BLEU
    from sacrebleu.significance import PairedTest

    from elmo_pipeline.metrics.seeds import welch_t_test

    references = gzip.open(DATA / "test_2016_flickr.en.gz", "rt", encoding="utf-8").read().splitlines()
    base = {r["seed"]: r["decoding"]["none"]["test_bleu"] for r in records["none"] if "none" in r.get("decoding", {})}
    out = [
        "## Is a fusion arm better than no fusion?",
        "",
        "Welch's t over the seeds' test BLEU (the seeds are the samples; two-sided), and sacrebleu's paired",
        "bootstrap of each seed's test",
        "translations against the same seed's no-fusion ones (resampling the 1,000 test sentences 1,000 times;",
        "two-sided: sacrebleu tests the absolute difference). An arm whose val chose λ = 0 is no fusion, untested.",
        "",
        "| arm vs no fusion | Δ test BLEU (mean) | Welch p (two-sided) | paired bootstrap p per seed |",
        "|---|---|---|---|",
    ]
    for arm, decoding, arm_folder in (("shallow fusion", "shallow", "none"), ("cold fusion", "cold", "cold")):
        found = {r["seed"]: r for r in records[arm_folder] if decoding in r.get("decoding", {})}
        if not found:
            out.append(f"| {arm} | — | — | — (not run) |")
            continue
        if all(r["decoding"][decoding]["lm_weight"] == 0 and decoding == "shallow" for r in found.values()):
            out.append(f"| {arm} | — | — | — (= no fusion) |")
            continue
        scores = [r["decoding"][decoding]["test_bleu"] for r in found.values()]
        shared = sorted(set(found) & set(base))
        test = welch_t_test(scores, [base[s] for s in shared]) if len(scores) > 1 and len(shared) > 1 else None
        per_seed = []
        for seed in shared:
            plain = folder / "none" / f"seed{seed}" / "translations.none.test.txt"
            fused = folder / arm_folder / f"seed{seed}" / f"translations.{decoding}.test.txt"
            if not (plain.is_file() and fused.is_file()):
                continue
            systems = [
                ("none", plain.read_text(encoding="utf-8").splitlines()),
                (decoding, fused.read_text(encoding="utf-8").splitlines()),
            ]
            _, result = PairedTest(systems, {"BLEU": BLEU()}, [references], test_type="bs", n_samples=1000)()
            per_seed.append(f"seed {seed}: {result['BLEU'][1].p_value:.3f}")
        delta = "—" if test is None else f"{test['delta']:+.2f}"
        welch = "—" if test is None else f"{test['p_two_sided']:.3f}"
        out.append(f"| {arm} | {delta} | {welch} | {', '.join(per_seed) or '—'} |")
    return out


def plot_curves(folder: Path, path: Path) -> None:
    """Val BLEU (greedy) after every epoch, one line per run."""
    import csv

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for arm, style in (("none", "-"), ("cold", "--")):
        for metrics in sorted((folder / arm).glob("seed*/metrics.csv")):
            rows = [r for r in csv.DictReader(metrics.open()) if r.get("val/bleu")]
            epochs = [int(r["epoch"]) + 1 for r in rows]
            label = {"none": "no fusion", "cold": "cold fusion"}[arm] + f", {metrics.parent.name}"
            ax.plot(epochs, [float(r["val/bleu"]) for r in rows], style, marker="o", label=label)
    ax.set_xlabel("epoch")
    ax.set_ylabel("val BLEU (greedy decoding)")
    ax.set_title("Multi30k de→en: val BLEU while training")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def examples(folder: Path = HERE, count: int = 4) -> list[str]:
    base = folder / "none" / "seed0"
    files = {"test": "test_2016_flickr", "val": "val"}
    record = base / "results.json"
    chosen = (
        json.loads(record.read_text())["decoding"].get("shallow", {}).get("lm_weight") if record.is_file() else None
    )
    candidates = [("shallow", "test", base / "translations.shallow.test.txt")]
    if chosen != 0.1:
        # where val chose lambda 0, shallow fusion changes nothing on test; what lambda 0.1 changes, on val:
        # elmo-pipeline translate --model RUN --input val.de.gz --lm-weight 0.1
        candidates.append(("shallow, λ = 0.1 (not chosen)", "val", base / "translations.shallow_lambda0.1.val.txt"))
    candidates.append(("cold", "test", folder / "cold" / "seed0" / "translations.cold.test.txt"))
    out = []
    for name, split, path in candidates:
        plain_path = base / f"translations.none.{split}.txt"
        source_path = DATA / f"{files[split]}.de.gz"
        if not (path.is_file() and plain_path.is_file() and source_path.is_file()):
            continue
        sources = gzip.open(source_path, "rt", encoding="utf-8").read().splitlines()
        references = gzip.open(DATA / f"{files[split]}.en.gz", "rt", encoding="utf-8").read().splitlines()
        plain = plain_path.read_text(encoding="utf-8").splitlines()
        fused = path.read_text(encoding="utf-8").splitlines()
        changed = [i for i, (a, b) in enumerate(zip(plain, fused, strict=True)) if a != b]
        out.append(f"**{name}**: {len(changed)} of {len(plain)} {split} translations differ from no fusion.")
        out.append("")
        for i in changed[:count]:
            out += [
                f"- source: {sources[i]}",
                f"  - reference: {references[i]}",
                f"  - no fusion: {plain[i]}",
                f"  - {name}: {fused[i]}",
            ]
        out.append("")
    return out or ["(none yet)"]


if __name__ == "__main__":
    import sys

    main(Path(sys.argv[1]).resolve() if len(sys.argv) > 1 else HERE)
