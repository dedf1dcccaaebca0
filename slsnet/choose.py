"""``python -m slsnet.choose``: which trained weights to ship, by a rule fixed before scoring.

The baseline (the shipped weights unless ``--baseline`` says otherwise) and every candidate are
scored on one folder: whole images, and the views of a scope held closer over each lesion
(``--zooms``, :func:`slsnet.evaluate.lesion_view`). The rule:

- eligible: whole-image JSC at least the baseline's + ``--gain``, and JSC at each zoom at least
  the baseline's - ``--slack`` (better on the whole image, no worse close up);
- winner: the eligible candidate with the highest whole-image JSC; among those within ``--tie``
  of it, the highest JSC at the largest zoom. None eligible: the baseline stays.

Beside the rule, for the whole image, the table shows each model's median JSC and on how many
images it beats / trails the baseline by more than 0.01 JSC: whether a mean moved on many images
or on a few.

The rule's video condition, no FAIL in ``python -m stream.temporal_bench``, needs the live
pipeline, which this package does not import: the command prints it for the eligible
candidates, best first, to be run before the winner ships.

    python -m slsnet.choose --data ../shared/data/isic2017/val runs/a/best_gan.pt runs/b/best_gan.pt
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from slsnet.checkpoint import WeightsError, load_generator, shipped_weights
from slsnet.data import find_pairs, read_mask, read_rgb
from slsnet.device import resolve_device
from slsnet.evaluate import score_views
from slsnet.metrics import MetricAccumulator, image_changes
from slsnet.reports import write_json

TEMPORAL = ("python -m stream.temporal_bench --data {data} --limit 30 --seconds 2 "
            "--modes off,ema,flow,keyframe --weights {weights}")


@dataclass(frozen=True)
class Rule:
    """The margins of the rule (fractions of JSC).

    Args:
        gain: how much higher than the baseline's the whole-image JSC must be.
        slack: how much lower than the baseline's the JSC at each zoom may be.
        tie: whole-image JSCs this close to the best count as equal.
    """

    gain: float = 0.01
    slack: float = 0.01
    tie: float = 0.002

    def bars(self, baseline: dict[float, float]) -> dict[float, float]:
        """The JSC a candidate needs at each zoom (1: the whole image)."""
        return {z: jsc + self.gain if z == 1 else jsc - self.slack for z, jsc in baseline.items()}

    def shortfalls(self, scores: dict[float, float], baseline: dict[float, float]) -> list[str]:
        """Why a candidate is not eligible (empty when it is)."""
        return [f"{_zoom_name(z)} {scores[z]:.4f} < {bar:.4f}"
                for z, bar in self.bars(baseline).items() if scores[z] < bar]

    def winner(self, candidates: dict[str, dict[float, float]],
               baseline: dict[float, float]) -> str | None:
        """The candidate to ship, or None when the baseline stays."""
        eligible = {name: s for name, s in candidates.items() if not self.shortfalls(s, baseline)}
        if not eligible:
            return None
        best = max(s[1.0] for s in eligible.values())
        close = {name: s for name, s in eligible.items() if s[1.0] >= best - self.tie}
        far = max(baseline)
        return max(close, key=lambda name: (close[name][far], close[name][1.0]))


def _zoom_name(zoom: float) -> str:
    return "whole" if zoom == 1 else f"{zoom:g}x"


def score_weights(weights: str | Path | None, rgbs: list[np.ndarray], masks: list[np.ndarray],
                  zooms: list[float], device: torch.device) -> dict[float, MetricAccumulator]:
    """Per-image metrics of ``weights`` at each zoom (1 included first)."""
    generator = load_generator(weights, device=device)
    return {z: score_views(generator, rgbs, masks, zoom=z, device=device)[0]
            for z in [1.0, *zooms]}


def _spread(accs: dict[str, dict[float, MetricAccumulator]], baseline: str) -> dict[str, dict]:
    """Each model's whole-image median JSC and, beside the baseline, the images it moved."""
    jsc = {name: [r["jsc"] for r in by_zoom[1.0].per_image] for name, by_zoom in accs.items()}
    return {name: {"median_jsc": by_zoom[1.0].median()["jsc"],
                   **({} if name == baseline else image_changes(jsc[name], jsc[baseline]))}
            for name, by_zoom in accs.items()}


def _parse_zooms(text: str) -> list[float]:
    try:
        zooms = [float(z) for z in text.split(",") if z.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of numbers: {text!r}") from None
    if any(z <= 1 for z in zooms):
        raise argparse.ArgumentTypeError(f"each zoom must be above 1: {text!r}")
    return sorted(set(zooms))


def _table(rows: dict[str, dict[float, dict[str, float]]], zooms: list[float],
           spread: dict[str, dict], verdicts: dict[str, str]) -> Table:
    table = Table(title="JSC whole and close up (DSC, median JSC and images moved: whole)")
    table.add_column("weights", overflow="fold")
    for name in ("JSC", "DSC", *(f"JSC {z:g}x" for z in zooms), "median", "images +/-",
                 "verdict"):
        table.add_column(name, justify="left" if name == "verdict" else "right")
    for name, scores in rows.items():
        moved = spread[name]
        table.add_row(name, f"{scores[1.0]['jsc']:.4f}", f"{scores[1.0]['dsc']:.4f}",
                      *(f"{scores[z]['jsc']:.4f}" for z in zooms), f"{moved['median_jsc']:.4f}",
                      f"+{moved['better']} / -{moved['worse']}" if "better" in moved else "-",
                      verdicts[name], style="dim" if verdicts[name] == "baseline" else None)
    return table


def main(argv: list[str] | None = None) -> int:
    """Score, apply the rule, print the table and the verdict; 0 whether or not one wins."""
    parser = argparse.ArgumentParser(prog="python -m slsnet.choose", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("candidates", nargs="+", help="generator weights (.pt) to judge")
    parser.add_argument("--data", required=True, help="validation folder (images/ + masks/)")
    parser.add_argument("--baseline", help="weights to beat (default: the shipped ones)")
    parser.add_argument("--zooms", type=_parse_zooms, default=[2.0, 3.0],
                        help="close-up views scored beside the whole image (default: 2,3)")
    parser.add_argument("--gain", type=float, default=Rule.gain,
                        help="whole-image JSC needed above the baseline's (default: 0.01)")
    parser.add_argument("--slack", type=float, default=Rule.slack,
                        help="JSC allowed below the baseline's at each zoom (default: 0.01)")
    parser.add_argument("--tie", type=float, default=Rule.tie,
                        help="whole-image JSCs this close count as equal (default: 0.002)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--json", dest="json_out", help="write every score and the verdict here")
    args = parser.parse_args(argv)

    rule = Rule(args.gain, args.slack, args.tie)
    baseline_path = args.baseline or shipped_weights()
    if baseline_path is None:
        print("error: no shipped weights to compare with; pass --baseline PATH", file=sys.stderr)
        return 2
    if not args.baseline and Path.cwd() in Path(baseline_path).parents:
        baseline_path = Path(baseline_path).relative_to(Path.cwd())  # as the user would type it
    names = [str(baseline_path), *dict.fromkeys(args.candidates)]
    if len({Path(n).resolve() for n in names}) != len(names):
        print(f"error: {baseline_path} is the baseline; it cannot be a candidate too",
              file=sys.stderr)
        return 2
    try:
        device = resolve_device(args.device)
        pairs = find_pairs(args.data)
        rgbs = [read_rgb(p.image) for p in pairs]
        masks = [read_mask(p.mask) for p in pairs]
        accs = {name: score_weights(name, rgbs, masks, args.zooms, device) for name in names}
    except (FileNotFoundError, ValueError, WeightsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    rows = {name: {z: acc.mean() for z, acc in by_zoom.items()} for name, by_zoom in accs.items()}
    spread = _spread(accs, names[0])
    jsc = {name: {z: m["jsc"] for z, m in scores.items()} for name, scores in rows.items()}
    base = jsc.pop(names[0])
    winner = rule.winner(jsc, base)
    verdicts = {names[0]: "baseline"}
    for name, scores in jsc.items():
        missing = rule.shortfalls(scores, base)
        verdicts[name] = "not eligible: " + "; ".join(missing) if missing else "eligible"
    if winner is not None:
        verdicts[winner] = "eligible, wins"
    console = Console()
    console.print(_table(rows, args.zooms, spread, verdicts))
    bars = ", ".join(f"{_zoom_name(z)} >= {bar:.4f}" for z, bar in rule.bars(base).items())
    console.print(f"eligible at {bars} ({len(pairs)} images in {args.data})")
    eligible = sorted((n for n in jsc if not rule.shortfalls(jsc[n], base)),
                      key=lambda n: (n != winner, -jsc[n][1.0]))
    if winner is None:
        console.print(f"no candidate is eligible: {names[0]} stays", soft_wrap=True)
    else:
        console.print(f"winner on still images: {winner}; it ships if the temporal benchmark "
                      "reports no FAIL (else the next eligible one is checked):", soft_wrap=True)
        for name in eligible:
            console.print("  " + TEMPORAL.format(data=args.data, weights=name), soft_wrap=True)
    if args.json_out:
        bars_by_name = {_zoom_name(z): bar for z, bar in rule.bars(base).items()}
        summary = {"data": str(args.data), "n": len(pairs), "baseline": names[0],
                   "rule": asdict(rule), "bars": bars_by_name,
                   "scores": {name: {_zoom_name(z): m for z, m in scores.items()}
                              for name, scores in rows.items()},
                   "whole_image_spread": spread, "verdicts": verdicts, "eligible": eligible,
                   "winner": winner}
        problem = write_json(args.json_out, summary)
        if problem:
            print(problem, file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
