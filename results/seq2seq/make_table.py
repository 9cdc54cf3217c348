"""The Multi30k fusion table from the runs under results/seq2seq/<arm>/seed<k>/ (written by run.sh).

    .venv/bin/python results/seq2seq/make_table.py            # writes results/seq2seq/table.md
    .venv/bin/python results/seq2seq/make_table.py results/seq2seq_caption_lm   # another folder of runs (run.sh OUT=)

Rows: no fusion and shallow fusion (both from the `none` runs: one model, two decodings) and cold fusion
(the `cold` runs). Test BLEU is mean ± sample std over the seeds present; each run decoded test once.
Then the issue's two bars, and the tests of each fusion arm against no fusion: over seeds (Welch's t, and a
paired t for shallow fusion) and over each seed's test sentences (a two-sided paired bootstrap, and sacrebleu's).
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
ARMS = ("none", "cold")  # the trained arms; shallow fusion decodes the none runs
DRAWS = 10_000  # paired bootstrap draws per seed


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
    records = {
        arm: [json.loads(p.read_text()) for p in sorted((folder / arm).glob("seed*/results.json"))] for arm in ARMS
    }
    rows = [("no fusion", "none", "none"), ("shallow fusion", "none", "shallow"), ("cold fusion", "cold", "cold")]
    lines = [
        "| decoder | seeds | val BLEU (the selection's score) | test BLEU (mean ± sample std) | λ per seed | epochs "
        "| fit minutes |",
        "|---|---|---|---|---|---|---|",
    ]
    notes = []
    for label, arm, decoding in rows:
        found = [r for r in records[arm] if decoding in r.get("decoding", {})]
        if not found:
            lines.append(f"| {label} | none yet | — | — | — | — | — |")
            continue
        d = [r["decoding"][decoding] for r in found]
        seeds = ", ".join(str(r["seed"]) for r in found)
        weights = ", ".join(format(x["lm_weight"], "g") for x in d) if decoding == "shallow" else "—"
        epochs = ", ".join(str(r["epochs"]) for r in found)
        minutes = ", ".join(format(r["fit_seconds"] / 60, ".0f") + ("*" if resumed(r) else "") for r in found)
        val, test = mean_std([x["val_bleu"] for x in d]), mean_std([x["test_bleu"] for x in d])
        if decoding == "shallow" and all(x["lm_weight"] == 0 for x in d):  # val chose no LM: not a row of its own
            lines.append(
                f"| {label} | {seeds} | = no fusion | = no fusion (val chose λ = 0 on every seed) | {weights} | "
                f"{epochs} | {minutes} |"
            )
            continue
        if decoding == "shallow" and any(x["lm_weight"] == 0 for x in d):
            plain = ", ".join(str(r["seed"]) for r in found if r["decoding"]["shallow"]["lm_weight"] == 0)
            notes.append(
                f"Shallow fusion: val chose λ = 0 on seed(s) {plain}, so there the row holds that seed's no-fusion "
                "translation. The row is shallow fusion as a user would run it, λ tuned on val, 0 included."
            )
        lines.append(f"| {label} | {seeds} | {val} | **{test}** | {weights} | {epochs} | {minutes} |")
    out = ["# Multi30k de→en: no fusion, shallow fusion, cold fusion", "", *lines, ""]
    if any(resumed(r) for arm in records.values() for r in arm):
        out.append("\\* resumed after an interruption: the minutes of the resumed attempt only.\n")
    out += [*notes, *missing_runs(folder)]
    every = [r for arm in records.values() for r in arm]
    for key, name in (("lm", "LM"), ("bleu_signature", "BLEU signature")):
        if len({str(r.get(key)) for r in every}) > 1:
            out.append(f"**The runs differ in their {name}:** " + ", ".join(sorted({str(r.get(key)) for r in every})))
    if every:
        first = every[0]
        chosen_unk = any("unk" in d for r in every for d in r["decoding"].values())
        out.append(
            f"LM (the path the runs recorded): `{first['lm']}`; its val perplexity over the target vocabulary: "
            f"{first.get('lm_val_perplexity')}. BLEU: sacrebleu `{first['bleu_signature']}`. Val BLEU is the score "
            + (
                "the choices were made on (λ with `<UNK>` kept, then the `--unk` mode for that λ)"
                if chosen_unk
                else "λ was chosen on"
            )
            + ", so it is biased upward; test was decoded once."
        )
    out += ["", *criteria(records), "", *significance(records, folder)]
    out += ["", "## Examples (seed 0) where fusion changed the translation", ""]
    out += examples(folder)
    (folder / "table.md").write_text("\n".join(out) + "\n", encoding="utf-8")
    print("\n".join(out))
    picture = HERE.parents[1] / "docs" / "img" / "seq2seq_val_bleu.png" if folder == HERE else folder / "val_bleu.png"
    plot_curves(folder, picture)


def missing_runs(folder: Path) -> list[str]:
    """A line for each seed folder without its results.json (a run still going, or interrupted)."""
    out = []
    for arm in ARMS:
        for seed in sorted((folder / arm).glob("seed*")):
            if not (seed / "results.json").is_file():
                out.append(
                    f"`{arm}/{seed.name}` has no results.json yet (running, or interrupted: "
                    f"`bash results/seq2seq/run.sh {arm} {seed.name[4:]} resume`); it is left out."
                )
    return out


def test_scores(records: dict[str, list[dict]], decoding: str) -> dict[int, float]:
    arm = "cold" if decoding == "cold" else "none"
    return {r["seed"]: r["decoding"][decoding]["test_bleu"] for r in records[arm] if decoding in r.get("decoding", {})}


def criteria(records: dict[str, list[dict]]) -> list[str]:
    """The issue's two bars: no fusion's mean test BLEU >= 32 over 3 seeds, and the best fusion arm's lead
    over no fusion above the larger of the two arms' seed stds."""
    plain = list(test_scores(records, "none").values())
    if not plain:
        return []
    out = [
        "## The bars",
        "",
        f"- No fusion: mean test BLEU {statistics.fmean(plain):.2f} over {len(plain)} seed(s), against 32"
        + (" (3 seeds are asked for)." if len(plain) < 3 else "."),
    ]
    if len(plain) < 2:
        return [*out, "- A fusion arm's lead against the seed std: needs 2 seeds or more of each arm."]
    leads = []
    for label, decoding in (("shallow fusion", "shallow"), ("cold fusion", "cold")):
        fused = list(test_scores(records, decoding).values())
        if len(fused) > 1:
            lead = statistics.fmean(fused) - statistics.fmean(plain)
            bar = max(statistics.stdev(fused), statistics.stdev(plain))
            if decoding == "shallow" and not any(r["decoding"]["shallow"]["lm_weight"] for r in records["none"]):
                label += " (= no fusion: val chose λ 0 on every seed)"
            leads.append((lead, label, bar))
    if leads:
        lead, label, bar = max(leads)
        verdict = "above" if lead > bar else "not above"
        out.append(f"- Best fusion arm, {label}: {lead:+.2f} BLEU, {verdict} the larger seed std ({bar:.2f}).")
    return out


def significance(records: dict[str, list[dict]], folder: Path = HERE) -> list[str]:
    """Each fusion arm against no fusion: over seeds (Welch's t; a paired t where the seeds pair up), and over
    the test sentences of each seed (a two-sided paired bootstrap, and sacrebleu's own)."""
    from sacrebleu.metrics import BLEU
    from sacrebleu.significance import PairedTest

    from elmo_pipeline.metrics.bleu import bleu, sentence_statistics
    from elmo_pipeline.metrics.bootstrap import paired_bootstrap
    from elmo_pipeline.metrics.seeds import paired_t_test, welch_t_test
    from elmo_pipeline.reproduce.significance import format_p

    references = gzip.open(DATA / "test_2016_flickr.en.gz", "rt", encoding="utf-8").read().splitlines()
    base = test_scores(records, "none")
    out = [
        "## Is a fusion arm better than no fusion?",
        "",
        "Over seeds (the seeds are the samples, two-sided): Welch's t on the seeds' test BLEU; for shallow fusion,",
        "which decodes each seed's no-fusion model again, also the paired t on the per-seed differences.",
        "",
        "| arm vs no fusion | Δ test BLEU (mean over seeds) | Welch p | paired t p |",
        "|---|---|---|---|",
    ]
    per_seed = [
        "",
        "Over the test sentences of each seed (one trained model; seed variance left out): a paired bootstrap,",
        f"{DRAWS:,} draws of the 1,000 sentences, two-sided (twice the smaller tail; `metrics/bootstrap.py`,",
        "BLEU from sacrebleu's own sentence statistics), and sacrebleu's `--paired-bs` p (1,000 draws). sacrebleu",
        "counts the draws whose |Δ| exceeds its mean by more than the observed |Δ|: when every draw has the sign",
        "of the observed Δ, that is one tail only, so its p is about half the two-sided one.",
        "",
        "| arm vs no fusion | seed | Δ test BLEU | 95% interval | bootstrap p (two-sided) | sacrebleu p (one tail) |",
        "|---|---|---|---|---|---|",
    ]
    for arm, decoding, arm_folder in (("shallow fusion", "shallow", "none"), ("cold fusion", "cold", "cold")):
        scores = test_scores(records, decoding)
        if not scores:
            out.append(f"| {arm} | — (not run) | — | — |")
            continue
        chosen = {r["seed"]: r["decoding"][decoding]["lm_weight"] for r in records[arm_folder] if r["seed"] in scores}
        if decoding == "shallow" and not any(chosen.values()):
            out.append(f"| {arm} | — (= no fusion: val chose λ 0 on every seed) | — | — |")
            continue
        welch = welch_t_test(list(scores.values()), list(base.values())) if len(scores) > 1 < len(base) else None
        paired = None
        if decoding == "shallow" and len(scores) > 1:
            seeds = sorted(scores)
            paired = paired_t_test([scores[s] for s in seeds], [base[s] for s in seeds])
        delta = statistics.fmean(scores.values()) - statistics.fmean(base.values()) if base else None
        out.append(
            f"| {arm} | {'—' if delta is None else f'{delta:+.2f}'} | {format_p(welch and welch['p_two_sided'])} | "
            f"{format_p(paired['p_two_sided']) if paired else '— (unpaired)' if decoding == 'cold' else '—'} |"
        )
        for seed in sorted(set(scores) & set(base)):
            if decoding == "shallow" and chosen[seed] == 0:
                per_seed.append(f"| {arm} | {seed} | 0 | — | = no fusion (λ 0) | — |")
                continue
            plain = folder / "none" / f"seed{seed}" / "translations.none.test.txt"
            fused = folder / arm_folder / f"seed{seed}" / f"translations.{decoding}.test.txt"
            if not (plain.is_file() and fused.is_file()):
                per_seed.append(f"| {arm} | {seed} | — | — | no translations file | — |")
                continue
            plain_lines = plain.read_text(encoding="utf-8").splitlines()
            fused_lines = fused.read_text(encoding="utf-8").splitlines()
            boot = paired_bootstrap(
                sentence_statistics(fused_lines, references),
                sentence_statistics(plain_lines, references),
                bleu,
                samples=DRAWS,
                seed=seed,
            )
            systems = [("none", plain_lines), (decoding, fused_lines)]
            _, result = PairedTest(systems, {"BLEU": BLEU()}, [references], test_type="bs", n_samples=1000)()
            per_seed.append(
                f"| {arm} | {seed} | {boot['delta']:+.2f} | [{boot['ci_low']:+.2f}, {boot['ci_high']:+.2f}] | "
                f"{format_p(boot['p_two_sided'], DRAWS)} | {format_p(result['BLEU'][1].p_value, 1000)} |"
            )
    return [*out, *per_seed]


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
