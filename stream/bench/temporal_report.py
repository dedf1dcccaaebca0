"""The temporal benchmark's summary, acceptance checks and tables (:mod:`stream.temporal_bench`)."""

from __future__ import annotations

import numpy as np
from rich.console import Console
from rich.table import Table

from stream.bench.temporal_metrics import flicker_reduction, mean_rows, unsteady_cut

EXTRAS = ("net_share", "interval", "smooth_ms")


def summarise(rows: list[dict]) -> dict:
    """Means per motion and label, and over all motions (``overall``)."""
    out: dict[str, dict[str, dict]] = {}
    motions = list(dict.fromkeys(r["motion"] for r in rows))
    labels = list(dict.fromkeys(r["label"] for r in rows))
    for motion in [*motions, "overall"]:
        out[motion] = {}
        for label in labels:
            sel = [r for r in rows if r["label"] == label and motion in (r["motion"], "overall")]
            out[motion][label] = {
                **mean_rows(sel),
                **{e: float(np.mean([r[e] for r in sel])) for e in EXTRAS},
            }
    return out


def _halved(smoothed: dict, raw: dict, key: str) -> bool:
    """``smoothed`` keeps at most half of ``raw``'s ``key`` (none, where raw has none)."""
    return smoothed[key] <= 0.5 * max(raw[key], 0.0) + 1e-9


def verdict(summary: dict, default: str) -> list[tuple[str, bool]]:
    """The acceptance checks: the default mode against ``off``, keyframes against ``flow``.

    ``default`` must halve the excess flicker of ``off`` (or leave none) and lose at most 0.01
    JSC on every motion; adaptive ``keyframe`` may lose at most 0.02 JSC against ``flow``. Where
    the camera's motion is known, a further check asks the same halving of the excess's unsteady
    part (:mod:`stream.bench.temporal_metrics`): the part that smoothing can remove at all.
    """
    checks = []
    for motion, by_label in summary.items():
        if motion == "overall" or "off" not in by_label:
            continue
        off = by_label["off"]
        if default in by_label and default != "off":
            d = by_label[default]
            cut = flicker_reduction(d, off)
            checks.append(
                (f"{motion}: {default} cuts excess flicker by {cut:.0%} (≥ 50%)",
                 _halved(d, off, "excess_flicker"))
            )
            if not np.isnan(off["unsteady_excess"]):
                cut = unsteady_cut(d, off)
                checks.append(
                    (f"{motion}: {default} cuts its unsteady part by {cut:.0%} (≥ 50%)",
                     _halved(d, off, "unsteady_excess"))
                )
            drop = off["jsc"] - d["jsc"]
            checks.append((f"{motion}: {default} JSC change {-drop:+.4f} (≥ −0.01)", drop <= 0.01))
        if "keyframe" in by_label and "flow" in by_label:
            cost = by_label["flow"]["jsc"] - by_label["keyframe"]["jsc"]
            k = by_label["keyframe"]["interval"]
            checks.append(
                (
                    f"{motion}: keyframe (k≈{k:.1f}) JSC cost vs flow {cost:+.4f} (≤ 0.02)",
                    cost <= 0.02,
                )
            )
    return checks


COLUMNS = (
    "motion",
    "mode",
    "JSC",
    "DSC",
    "ΔJSC vs off",
    "flicker",
    "truth flicker",
    "excess",
    "excess cut",
    "shape part",
    "unsteady cut",
    "net frames",
    "k",
    "smooth ms",
)


def _known(value: float, spec: str) -> str:
    """``value`` formatted, or a dash where it is unknown (NaN: no camera motion to split by)."""
    return "—" if np.isnan(value) else format(value, spec)


def _cells(label: str, r: dict, off: dict | None) -> list[str]:
    """One table row after the motion: the mode's numbers, and its change against ``off``."""
    return [
        label,
        f"{r['jsc']:.4f}",
        f"{r['dsc']:.4f}",
        f"{r['jsc'] - off['jsc']:+.4f}" if off else "—",
        f"{r['flicker']:.4f}",
        f"{r['truth_flicker']:.4f}",
        f"{r['excess_flicker']:+.4f}",
        f"{flicker_reduction(r, off):.0%}" if off and label != "off" else "—",
        _known(r["shape_excess"], "+.4f"),
        _known(unsteady_cut(r, off), ".0%") if off and label != "off" else "—",
        f"{r['net_share']:.0%}",
        f"{r['interval']:.1f}",
        f"{r['smooth_ms']:.2f}",
    ]


def print_report(console: Console, summary: dict, checks: list, header: str) -> None:
    """The rich table: one row per motion and mode, the overall means last; then the checks."""
    table = Table(title=f"Temporal benchmark — {header}")
    for i, col in enumerate(COLUMNS):
        table.add_column(col, justify="left" if i < 2 else "right")
    for motion, by_label in summary.items():
        for i, (label, r) in enumerate(by_label.items()):
            table.add_row(
                motion if i == 0 else "",
                *_cells(label, r, by_label.get("off")),
                style="bold" if motion == "overall" else None,
                end_section=i == len(by_label) - 1,
            )
    console.print(table)
    for text, ok in checks:
        console.print(f"[{'green' if ok else 'red'}]{'PASS' if ok else 'FAIL'}[/] {text}")


def markdown(summary: dict) -> str:
    """The same table as GitHub markdown (for docs/benchmarks.md)."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for motion, by_label in summary.items():
        for label, r in by_label.items():
            lines.append("| " + " | ".join([motion, *_cells(label, r, by_label.get("off"))]) + " |")
    return "\n".join(lines) + "\n"


def response_line(response: dict[str, float | None]) -> str:
    """One line: per mode, the frames a confident change of the network's mind takes to show."""
    parts = [f"{label} {'never' if n is None else format(n, '.0f')}" for label, n in
             response.items()]
    return "Frames to show a confident change (still scene): " + ", ".join(parts)
