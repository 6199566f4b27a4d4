"""Rendering of evaluation results: Markdown tables, bar plots, image contact sheets.

Pure functions over `attrgan.metrics.AttributeMetrics` / `GainInterval` and numpy images; no Ray,
no model code.
Plots use matplotlib's Agg backend so they render on machines without a display.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # before pyplot: headless batch machines have no display

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from attrgan.attributes import OCCLUSION_DOWN  # noqa: E402
from attrgan.experiments import (COMPARISONS, CORRUPTIONS, EXPERIMENTS, RULE_COMPARISONS,  # noqa: E402
                                 TRACK_SET_LABELS, TRACK_SETS, TRACK_VARIANTS, TrackEvaluation)
from attrgan.fusion import QUALITY_FEATURES, RULES  # noqa: E402
from attrgan.metrics import AttributeMetrics, GainInterval  # noqa: E402

SUMMARY_COLUMNS = ("mA", "Accuracy", "Precision", "Recall", "F1")


def percent(value: float) -> str:
    """0.5771 -> '57.71'; NaN (nothing to measure) -> 'n/a'."""
    return "n/a" if value is None or math.isnan(value) else f"{100.0 * value:.2f}"


def points(value: float | None) -> str:
    """A difference of fractions in signed percentage points: 0.018 -> '+1.80'; NaN or None -> 'n/a'.
    A difference that rounds to zero is '+0.00' whatever its float sign."""
    return "n/a" if value is None or math.isnan(value) else f"{round(100.0 * value, 2) + 0.0:+.2f}"


def decibels(value: float | None) -> str:
    """17.304 -> '17.30'; inf (identical pixels) -> 'inf'; NaN or None (nothing compared) -> 'n/a'."""
    return "n/a" if value is None or math.isnan(value) else f"{value:.2f}"


def gain_text(interval: GainInterval) -> str:
    """'+1.80 (95 % CI +0.90 to +2.70, 500 crops) helps': the mA gain, its interval and verdict;
    '500 crops in 52 tracks' when its resamples drew tracks."""
    tracks = f" in {interval.tracks} tracks" if interval.tracks is not None else ""
    return (f"{points(interval.gain)} ({100 * interval.level:g} % CI {points(interval.low)} to "
            f"{points(interval.high)}, {interval.crops} crops{tracks}) {interval.verdict}")


def interval_cell(gain: float, low: float, high: float) -> str:
    """A gain and its interval in points: '+1.80 [+0.90, +2.70]'."""
    return f"{points(gain)} [{points(low)}, {points(high)}]"


def restoration_verdict(intervals: Mapping[str, GainInterval]) -> str:
    """One clause over all comparisons that claims no more than their intervals support:
    'every restoration helps' only when each one does, otherwise which help, which show no
    measurable effect and which hurt ('helps: occlusion; no measurable effect: complete')."""
    if not intervals:
        return "nothing compared"
    groups = {v: [name for name, i in intervals.items() if i.verdict == v]
              for v in ("helps", "no measurable effect", "hurts")}
    if len(groups["helps"]) == len(intervals):
        return "every restoration helps"
    if len(groups["no measurable effect"]) == len(intervals):
        return "no restoration has a measurable effect"
    return "; ".join(f"{v}: {', '.join(names)}" for v, names in groups.items() if names)


def gain_table(intervals: Mapping[str, GainInterval]) -> str:
    """mA and per attribute, each comparison's gain in points with its interval: '+1.80 [+0.90, +2.70]'."""
    attrs = _shared_attributes({n: i.per_attribute for n, i in intervals.items()}, caller="gain_table",
                               what="comparison")
    rows = [["**mA**", *(interval_cell(i.gain, i.low, i.high) for i in intervals.values())]]
    for attr in attrs:
        rows.append([attr, *(interval_cell(*i.per_attribute.loc[attr, ["gain", "low", "high"]])
                             for i in intervals.values())])
    return markdown_table(["Attribute", *intervals], rows)


def summary_row(metrics: AttributeMetrics) -> list[str]:
    """The five paper metrics of one experiment, as percentages."""
    return [percent(v) for v in (metrics.ma, metrics.accuracy, metrics.precision, metrics.recall, metrics.f1)]


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub-flavoured Markdown table; the first column is left-aligned, the rest right-aligned."""
    if any(len(r) != len(header) for r in rows):
        raise ValueError(f"every row needs {len(header)} cells, got row lengths {sorted({len(r) for r in rows})}")
    lines = ["| " + " | ".join(str(h) for h in header) + " |",
             "|" + "|".join([":---"] + ["---:"] * (len(header) - 1)) + "|"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def summary_table(experiments: Sequence[tuple[str, AttributeMetrics]], *, first: str = "Input") -> str:
    """Paper Table 1/2 layout: one row per (name, metrics), columns mA, Accuracy, Precision, Recall, F1."""
    return markdown_table([first, *SUMMARY_COLUMNS], [[name, *summary_row(m)] for name, m in experiments])


def per_attribute_table(metrics: AttributeMetrics) -> str:
    """Supplementary Table 1 layout: per attribute mA, accuracy, precision, recall, F1 (percent) and counts."""
    rows = []
    for attr, r in metrics.per_attribute.iterrows():
        rows.append([attr, percent(r["ma"]), percent(r["accuracy"]), percent(r["precision"]),
                     percent(r["recall"]), percent(r["f1"]), int(r["positives"]), int(r["support"])])
    return markdown_table(["Attribute", *SUMMARY_COLUMNS, "Positives", "Labelled"], rows)


def plot_per_attribute_ma(series: Mapping[str, AttributeMetrics], path: str | Path, *,
                          title: str = "Per-attribute mA") -> Path:
    """Grouped horizontal bars: one group per attribute, one bar per named experiment. Writes a PNG."""
    attrs = _shared_attributes({n: m.per_attribute for n, m in series.items()}, caller="plot_per_attribute_ma",
                               what="experiment")
    names = list(series)
    y = np.arange(len(attrs))
    height = 0.8 / len(names)
    fig, ax = plt.subplots(figsize=(8, 1.5 + 0.32 * len(attrs) * max(1, len(names) / 2)))
    for k, name in enumerate(names):
        values = 100.0 * np.nan_to_num(series[name].per_attribute["ma"].to_numpy(dtype=float), nan=0.0)
        ax.barh(y + (k - (len(names) - 1) / 2) * height, values, height=height, label=name)
    ax.set_yticks(y, attrs)
    ax.invert_yaxis()  # dataset order top to bottom, like the tables
    ax.axvline(50.0, color="grey", linewidth=0.8, linestyle="--")  # chance level of mA
    ax.set_xlim(0, 100)
    ax.set_xlabel("mA (%)")
    ax.set_title(title)
    ax.legend(loc="lower right", fontsize="small")
    return _save(fig, path)


def plot_corrupted_vs_restored(pairs: Mapping[str, tuple[AttributeMetrics, AttributeMetrics]],
                               path: str | Path, *, labels: tuple[str, str] = ("corrupted", "restored"),
                               title: str = "Corrupted vs restored input") -> Path:
    """One panel per summary metric; per experiment a bar for the corrupted and one for the restored input."""
    if not pairs:
        raise ValueError("plot_corrupted_vs_restored needs at least one experiment, got none")
    names = list(pairs)
    x = np.arange(len(names))
    fig, axes = plt.subplots(1, len(SUMMARY_COLUMNS), figsize=(3.2 * len(SUMMARY_COLUMNS), 3.6), sharey=True)
    fields = ("ma", "accuracy", "precision", "recall", "f1")
    for ax, column, field in zip(axes, SUMMARY_COLUMNS, fields):
        for k, label in enumerate(labels):
            values = [100.0 * np.nan_to_num(getattr(pairs[n][k], field), nan=0.0) for n in names]
            ax.bar(x + (k - 0.5) * 0.38, values, width=0.38, label=label)
        ax.set_xticks(x, names, rotation=20, ha="right", fontsize="small")
        ax.set_title(column)
        ax.set_ylim(0, 100)
    axes[0].set_ylabel("%")
    axes[0].legend(fontsize="small")
    fig.suptitle(title)
    return _save(fig, path)


def contact_sheet(rows: Sequence[Sequence[np.ndarray]], path: str | Path, *,
                  column_titles: Sequence[str], row_titles: Sequence[str] | None = None,
                  title: str | None = None) -> Path:
    """A grid of images like the paper's Figures 1, 4, 5: one row per example, one column per stage.

    rows: per example, one image per column, each HWC RGB uint8 (any size; shown at a common height).
    """
    if not rows:
        raise ValueError("contact_sheet needs at least one row of images, got none")
    ncol = len(column_titles)
    for i, r in enumerate(rows):
        if len(r) != ncol:
            raise ValueError(f"row {i} has {len(r)} images, expected {ncol} (one per column title)")
        for img in r:
            if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
                raise ValueError(f"images must be HWC RGB uint8, got shape {img.shape} dtype {img.dtype}")
    if row_titles is not None and len(row_titles) != len(rows):
        raise ValueError(f"row_titles needs {len(rows)} entries, got {len(row_titles)}")
    fig, axes = plt.subplots(len(rows), ncol, figsize=(1.3 * ncol + 0.6, 2.6 * len(rows) + 0.6), squeeze=False)
    for i, r in enumerate(rows):
        for j, img in enumerate(r):
            ax = axes[i][j]
            # Nearest neighbour keeps a low-resolution input visibly blocky, as the network saw it.
            ax.imshow(img, interpolation="nearest", aspect="auto")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(column_titles[j], fontsize="small")
        if row_titles is not None:
            axes[i][0].set_ylabel(row_titles[i], fontsize="x-small")
    if title:
        fig.suptitle(title, fontsize="medium")
    return _save(fig, path)


def _shared_attributes(tables: Mapping[str, pd.DataFrame], *, caller: str, what: str) -> list[str]:
    """The attribute index every named per-attribute table shares; ValueError when there is no
    table or two tables differ (their rows would be drawn against the wrong attributes)."""
    if not tables:
        raise ValueError(f"{caller} needs at least one {what}, got none")
    names = list(tables)
    attrs = list(tables[names[0]].index)
    for name in names[1:]:
        if list(tables[name].index) != attrs:
            raise ValueError(f"{what} {name!r} has different attributes from {names[0]!r}")
    return attrs


def _save(fig: plt.Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)  # long jobs draw many figures; pyplot keeps every open one alive
    return path


def evaluation_figures(metrics: Mapping[str, AttributeMetrics], folder: Path) -> list[Path]:
    """The evaluation's plots: per-attribute mA (clean, corrupted, restored) and each comparison."""
    pairs = {name: (metrics[before], metrics[after]) for name, before, after in COMPARISONS}
    return [
        plot_per_attribute_ma(
            {"clean": metrics["clean"], "corrupted": metrics["corrupted"], "restored": metrics["restored"]},
            folder / "per_attribute_ma.png", title="Per-attribute mA: clean, corrupted, restored"),
        plot_corrupted_vs_restored(pairs, folder / "corrupted_vs_restored.png",
                                          labels=("without restoration", "with restoration")),
    ]


def render_report(metrics: Mapping[str, AttributeMetrics], *, summary: Mapping[str, Any],
                  detection: AttributeMetrics | None, intervals: Mapping[str, GainInterval],
                  figures: Sequence[Path], tracks: TrackEvaluation | None = None) -> str:
    """md: Tables 1 and 2, the gains with their intervals, occlusion detection, the PSNR of
    the reconstruction, per person (`track_section`, when the crops come in tracks), per-attribute
    tables (metrics and gains), figures."""
    label = {key: lab for key, lab, _, _ in EXPERIMENTS}
    counts, errors = summary["counts"], summary["errors"]
    lines = [
        "# Attribute recognition under occlusion and low resolution",
        "",
        f"Manifest `{summary['manifest']}` (split `{summary['split']}`), bundle `{summary['bundle']}` "
        f"(version `{summary['model_version']}`), evaluated {summary['evaluated_at']} in {summary['seconds']} s.",
        f"Crops per set: clean {counts['clean']}, occluded {counts['occluded']}, low-res {counts['lowres']}"
        + (f" (unreadable: {errors})" if any(errors.values()) else "") + ".",
        f"Metrics over {len(summary['attributes'])} attributes (`{OCCLUSION_DOWN}` is reported on its own), "
        "in percent, RAP protocol (`attrgan.metrics`), with the bundle's per-attribute thresholds.",
        "",
        "## Table 1: classifier on clean crops",
        "",
        summary_table([("clean", metrics["clean"]),
                              ("clean + complete pipeline", metrics["clean_pipeline"])], first="Method"),
        "",
        "## Table 2: occlusion, low resolution, complete model",
        "",
        "*Corrupted*: the classifier alone on the plain corrupted input. *Restored*: the complete "
        "conditional pipeline. The complete experiment merges the occluded and low-res sets.",
        "",
    ]
    rows = []
    for group, keys in (("occlusion", ("occluded", "occluded_reconstruction")),
                        ("low resolution", ("lowres_bilinear", "lowres_superres")),
                        ("complete", ("corrupted", "restored"))):
        rows.append([f"**{group}**", "", "", "", "", ""])
        rows += [[label[k], *summary_row(metrics[k])] for k in keys]
    lines += [markdown_table(["Input", *SUMMARY_COLUMNS], rows), ""]
    first = next(iter(intervals.values()))
    over = "tracks" if first.tracks is not None else "crops"
    lines += [f"Gain in mA from restoring (points; paired bootstrap over {over}, {first.resamples} resamples; "
              "*helps* only when the whole interval lies above 0): "
              + "; ".join(f"{name} {gain_text(intervals[name])}" for name, _, _ in COMPARISONS)
              + f". Overall: {restoration_verdict(intervals)}.", ""]
    rates = summary["restoration_rates"]
    lines += ["Share of crops the complete pipeline restored: "
              + "; ".join(f"{s}: SR {100 * r['super_resolved']:.0f} %, reconstructed {100 * r['reconstructed']:.0f} %"
                          for s, r in rates.items()) + ".", ""]
    if detection is not None:
        r = detection.per_attribute.loc[OCCLUSION_DOWN]
        lines += ["## Occlusion detection", "",
                  f"`{OCCLUSION_DOWN}` (first pass) telling occluded crops from the others: "
                  f"balanced accuracy {percent(r['ma'])}, precision {percent(r['precision'])}, "
                  f"recall {percent(r['recall'])}, F1 {percent(r['f1'])} "
                  "at its own threshold (the paper relies on F1 > 85).", ""]
        sent = summary.get("occlusion_detection_pipeline")
        at = (sent or {}).get("per_attribute", {}).get(OCCLUSION_DOWN, {})
        if at.get("ma") is not None and at.get("recall") is not None:
            false_alarms = 1.0 - (2.0 * at["ma"] - at["recall"])  # balanced accuracy = (TPR + TNR) / 2
            lines[-1:] = [f"The pipeline reconstructs from {summary['occlusion_threshold']:.3f} "
                          "(`pipeline.occlusion_threshold`, `pipeline.calibrated_occlusion`): it sends "
                          f"{percent(at['recall'])} % of the occluded crops and {percent(false_alarms)} % of "
                          "the others to G^R.", ""]
    rec = summary.get("reconstruction_psnr")
    if rec is not None:
        size = "×".join(str(v) for v in summary["input_size"])
        lines += ["## What reconstruction paints (PSNR)", "",
                  f"Every occluded crop ({rec['crops']}), forced through G^R at the classifier's {size} size. "
                  "Visible rows lie above the occluder's edge, occluded rows below it (rows the resizing "
                  "blends at the edge are in neither).", "",
                  markdown_table(["Rows", "Compared", "PSNR (dB)"], [
                      ["visible", "reconstructed vs occluded input", decibels(rec["visible_vs_input"])],
                      ["occluded", "reconstructed vs clean original", decibels(rec["occluded_vs_original"])],
                      ["occluded", "occluded input vs clean original (baseline)",
                       decibels(rec["occluded_input_vs_original"])],
                  ]), ""]
    if tracks is not None:
        lines += [track_section(tracks), ""]
    lines += ["## Figures", ""]
    lines += [f"![{Path(f).stem}]({Path(f).as_posix()})" for f in figures]
    lines += ["", "## Per attribute, clean crops", "", per_attribute_table(metrics["clean"]), "",
              "## Per attribute, restored (complete pipeline on corrupted crops)", "",
              per_attribute_table(metrics["restored"]), "",
              "## Per attribute, gain from restoring", "",
              f"Points of mA, [{100 * first.level:g} % interval].", "",
              gain_table(intervals), ""]
    return "\n".join(lines)


def track_section(tracks: TrackEvaluation) -> str:
    """md: per person. The questions (what a track wins back of what corruption costs per crop,
    whether restoration still helps once crops are fused, the mixed tracks with no clean frame,
    quality fusion against the mean and the best crop), then mA per crop and per track of every
    fusion rule, and the tracks' accuracy and F1."""
    fusion = tracks.fusion
    rule = fusion.rule
    coefficients = ", ".join(f"{f} {c:+.3g}" for f, c in zip(QUALITY_FEATURES, fusion.coefficients))
    fit = fusion.fitted
    if "reason" in fit:
        fitted = f"not fitted: {fit['reason']}"
    elif "tracks" in fit:
        fitted = f"fitted on {fit['tracks']} tracks" + (f" of the {fit['split']} split" if "split" in fit else "")
    else:
        fitted = "none stored"
    if not any(fusion.coefficients):
        fitted += "; every crop weighs the same, so quality = mean and best = a track's first crop"
    sets = tracks.sets
    clean = sets["clean"]["plain"]
    some = next(iter(tracks.won_back.values()))["plain"]

    def cell(i: GainInterval, *, verdict: bool = True) -> str:
        return interval_cell(i.gain, i.low, i.high) + (f" {i.verdict}" if verdict else "")

    def cost(corruption: str, variant: str) -> str:
        crop = sets["clean"][variant].per_crop.ma - sets[corruption][variant].per_crop.ma
        return f"{cell(tracks.won_back[corruption][variant], verdict=False)} of {points(crop)}"

    questions = [[f"{TRACK_SET_LABELS[c]}: what a track wins back of the per-crop cost", sets[c]["plain"].tracks,
                  cost(c, "plain"), cost(c, "pipeline")] for c in CORRUPTIONS]
    questions += [[f"mixed: fusion {name.replace(' - ', ' vs ')}", sets["mixed"]["plain"].tracks,
                   cell(tracks.rules[name]["plain"]), cell(tracks.rules[name]["pipeline"])]
                  for name, _, _ in RULE_COMPARISONS]
    questions.append([f"mixed, no clean frame: per-track mA ({rule})", sets["mixed_no_clean"]["plain"].tracks,
                      percent(sets["mixed_no_clean"]["plain"].per_track[rule].ma),
                      percent(sets["mixed_no_clean"]["pipeline"].per_track[rule].ma)])
    restoration = [[TRACK_SET_LABELS[s], sets[s]["plain"].tracks, cell(row["crop"]), cell(row["track"])]
                   for s, row in tracks.restoration.items()]
    ma_rows, other_rows = [], []
    for s in TRACK_SETS:
        for variant in TRACK_VARIANTS:
            m = sets[s][variant]
            label = [TRACK_SET_LABELS[s], "with" if variant == "pipeline" else "without"]
            ma_rows.append([*label, m.tracks, m.crops, percent(m.per_crop.ma),
                            *(percent(m.per_track[r].ma) for r in RULES)])
            other_rows.append([*label, *(percent(x) for t in (m.per_crop, *(m.per_track[r] for r in RULES))
                                         for x in (t.accuracy, t.f1))])
    return "\n".join([
        "## Per person: tracks",
        "",
        f"{clean.tracks} test tracks ({clean.crops} crops). A person's crops are fused into one answer "
        f"(`attrgan.fusion`) on the {len(tracks.attributes)} person-level attributes; *mixed* tracks take each "
        "frame from the clean, occluded or low-res copy that `corrupt.track_conditions` picks (a passer-by "
        "hides a run of frames, the far end is small, a quarter of the tracks have no clean frame). "
        f"The bundle's fusion: rule `{rule}`, quality coefficients {coefficients} ({fitted}). *Without* "
        "restoration: the classifier alone; *with*: the complete pipeline. Intervals: paired bootstrap over tracks, "
        f"{some.resamples} resamples, {100 * some.level:g} %.",
        "",
        f"What corruption costs and what tracks win back (points of mA; fusion `{rule}`). *Wins back*: "
        "(per-crop mA clean − corrupted) − (per-track mA clean − corrupted), of the per-crop cost after *of*.",
        "",
        markdown_table(["Question", "Tracks", "Without restoration", "With restoration"], questions),
        "",
        f"Does restoration still help once crops are fused? mA with − without restoration (points; per track: "
        f"fusion `{rule}`).",
        "",
        markdown_table(["Tracks", "Tracks (n)", "Per crop", "Per track"], restoration),
        "",
        "mA per crop and per track, by fusion rule (percent):",
        "",
        markdown_table(["Tracks", "Restoration", "Tracks (n)", "Crops", "Per crop", *RULES], ma_rows),
        "",
        "Instance accuracy and F1 per crop and per track (percent):",
        "",
        markdown_table(["Tracks", "Restoration", "Crop Acc", "Crop F1",
                        *(f"{r} {m}" for r in RULES for m in ("Acc", "F1"))], other_rows),
    ])
