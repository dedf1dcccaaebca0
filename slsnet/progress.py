"""``python -m slsnet.progress RUN``: where a training run stands, from its folder alone.

A run of days is read back from what ``slsnet.train`` writes (``args.json``, ``log.jsonl``,
``last.pt``), so it works while the run trains, after it stopped, and on another machine: the
epoch reached and each phase's share of it, the last epochs' train and val scores, the best
epoch (``best.pt``), how val JSC moved over the last epochs, and how long the epochs left should
take. An epoch's duration is the time between two epochs' log lines; the gap after a stop and
a resume is left out, and a phase kind not timed yet is said to be so, not guessed.

    python -m slsnet.progress runs/cpu_long

``--against OTHER`` sets another run's epochs beside this one's, epoch by epoch (two recipes,
or two branches of one run): train and val JSC of each, their gaps, and val's difference.
OTHER is a run folder, or a weights file whose model card holds its run's curve (the shipped
weights: ``--against weights/slsnet_isic2017.pt`` needs no folder of theirs).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from slsnet.checkpoint import WeightsError, read_card
from slsnet.curves import curve_records, train_jsc
from slsnet.reports import write_json
from slsnet.run_files import read_log
from slsnet.schedule import phase_spans, run_phases, total_epochs
from slsnet.time_budget import epoch_seconds


def read_run(run: Path) -> tuple[dict, list[dict]]:
    """The run's arguments and its log records (one per finished epoch)."""
    args_path, log_path = run / "args.json", run / "log.jsonl"
    for path in (args_path, log_path):
        if not path.is_file():
            raise FileNotFoundError(f"{run} is not a training run folder: {path.name} is missing")
    try:
        args = json.loads(args_path.read_text())
        log = read_log(log_path)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{run}: unreadable run file ({exc})") from None
    return args, log


def read_other(path: Path) -> list[dict]:
    """The epochs to set beside a run: a run folder's log, or a weights file's card curve."""
    if not path.is_file():
        return read_run(path)[1]
    curve = read_card(path).get("training", {}).get("curve")
    if not curve:
        raise ValueError(f"{path}: its model card ({path.with_suffix('.json').name}) holds no "
                         "per-epoch curve of its run (slsnet.card writes one since 2026-12-07)")
    return curve_records(curve)


def summarise(args: dict, log: list[dict], *, last: int = 5) -> dict:
    """Everything the command prints, as plain data."""
    phases = run_phases(args)
    done = log[-1]["epoch"] if log else 0
    timing = epoch_seconds(log)
    rows, left, unknown = [], 0.0, []
    for i, (first, end, phase) in enumerate(phase_spans(phases), start=1):
        ran = [r for r in log if first <= r["epoch"] <= end]
        todo = end - max(done, first - 1) if done < end else 0
        seconds = timing.get((phase.size, phase.kind))
        if todo and seconds is None:
            unknown.append(f"{todo} at {phase.size} {phase.kind}")
        elif todo:
            left += todo * seconds
        rows.append({"phase": i, "size": phase.size, "kind": phase.kind,
                     "epochs": [first, end], "run": len(ran),
                     "val_jsc_last": ran[-1]["val"]["jsc"] if ran else None,
                     "epoch_seconds": seconds})
    best = max(log, key=lambda r: r["val"]["jsc"], default=None)
    best_gan = max((r for r in log if r["kind"] == "gan"), key=lambda r: r["val"]["jsc"],
                   default=None)
    recent = log[-last:]
    trend = ((recent[-1]["val"]["jsc"] - recent[0]["val"]["jsc"]) / (len(recent) - 1)
             if len(recent) > 1 else None)
    return {
        "epoch": done, "epochs": total_epochs(phases),
        "schedule": ",".join(str(p) for p in phases),
        "phases": rows,
        "best": {"epoch": best["epoch"], "val_jsc": best["val"]["jsc"]} if best else None,
        "best_gan": ({"epoch": best_gan["epoch"], "val_jsc": best_gan["val"]["jsc"]}
                     if best_gan else None),
        "recent": [{"epoch": r["epoch"], "size": r["size"], "kind": r["kind"], "lr": r["lr"],
                    "images_per_s": r["images_per_s"],
                    "train_jsc": train_jsc(r),
                    "val_jsc": r["val"]["jsc"], "val_dsc": r["val"]["dsc"],
                    "val_sen": r["val"]["sen"], **_game(r)} for r in recent],
        "val_jsc_per_epoch": trend,
        "seconds_left": left, "not_timed": unknown,
        "last_epoch_at": log[-1]["time"] if log else None,
    }


def _game(record: dict) -> dict:
    """The adversarial game of a gan epoch (means over its steps); None for a supervised one.

    ``d_loss``: the discriminator's loss on real and generated pairs; ``g_adversarial``: the
    generator's adversarial term before its weight. A falling ``d_loss`` with a rising
    ``g_adversarial`` is a discriminator that is winning.
    """
    gan = record["kind"] == "gan"
    return {"d_loss": record.get("d_total") if gan else None,
            "g_adversarial": record.get("g_adversarial") if gan else None}


def side_by_side(log: list[dict], other: list[dict], *, last: int = 5) -> list[dict]:
    """The last ``last`` epochs both logs hold, each run's train and val JSC at each."""
    theirs = {r["epoch"]: r for r in other}
    rows = []
    for r in log:
        o = theirs.get(r["epoch"])
        if o is None:
            continue
        rows.append({"epoch": r["epoch"], "size": r["size"], "kind": r["kind"],
                     "train_jsc": train_jsc(r), "val_jsc": r["val"]["jsc"],
                     "other_train_jsc": train_jsc(o), "other_val_jsc": o["val"]["jsc"],
                     "val_difference": r["val"]["jsc"] - o["val"]["jsc"]})
    return rows[-last:]


def _gap(train: float | None, val: float) -> str:
    return "-" if train is None else f"{train - val:.4f}"


def show_side_by_side(run: Path, other: Path, rows: list[dict], console: Console) -> None:
    """Print :func:`side_by_side`'s rows, or say that the runs share no epoch."""
    if not rows:
        console.print(f"{run} and {other} have no epoch in common", soft_wrap=True)
        return
    table = Table(title=f"A: {run}   B: {other}   (gap: train JSC - val JSC)")
    for name in ("epoch", "size", "kind", "A train", "A val", "A gap", "B train", "B val",
                 "B gap", "A val - B val"):
        table.add_column(name, justify="right")
    for r in rows:
        table.add_row(str(r["epoch"]), str(r["size"]), r["kind"], _num(r["train_jsc"]),
                      _num(r["val_jsc"]), _gap(r["train_jsc"], r["val_jsc"]),
                      _num(r["other_train_jsc"]), _num(r["other_val_jsc"]),
                      _gap(r["other_train_jsc"], r["other_val_jsc"]),
                      f"{r['val_difference']:+.4f}")
    console.print(table)


def _num(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes = round(seconds / 60)
    return f"{minutes // 60} h {minutes % 60:02d} min" if minutes >= 60 else f"{minutes} min"


def show(run: Path, summary: dict, console: Console) -> None:
    """Print the summary as two tables and a few lines."""
    epoch, total = summary["epoch"], summary["epochs"]
    console.print(f"{run}: epoch {epoch} of {total} ({summary['schedule']})", soft_wrap=True)
    phases = Table(title="phases")
    for name in ("phase", "size", "kind", "epochs", "run", "val JSC at its last", "epoch takes"):
        phases.add_column(name, justify="right")
    for p in summary["phases"]:
        took = "-" if p["epoch_seconds"] is None else _duration(p["epoch_seconds"])
        phases.add_row(str(p["phase"]), str(p["size"]), p["kind"],
                       f"{p['epochs'][0]}–{p['epochs'][1]}", str(p["run"]),
                       _num(p["val_jsc_last"]), took)
    console.print(phases)
    recent = Table(title="last epochs (train JSC: a fixed subset, not augmented)")
    for name in ("epoch", "size", "kind", "lr", "img/s", "train JSC", "val JSC", "val DSC",
                 "val SEN", "D loss / G adv"):
        recent.add_column(name, justify="right")
    for r in summary["recent"]:
        recent.add_row(str(r["epoch"]), str(r["size"]), r["kind"], f"{r['lr']:.1e}",
                       f"{r['images_per_s']:.1f}", _num(r["train_jsc"]), _num(r["val_jsc"]),
                       _num(r["val_dsc"]), _num(r["val_sen"]),
                       "-" if r["d_loss"] is None
                       else f"{r['d_loss']:.3f} / {r['g_adversarial']:.3f}")
    console.print(recent)
    if summary["best"]:
        best = summary["best"]
        console.print(f"best: epoch {best['epoch']}, val JSC {best['val_jsc']:.4f} "
                      f"({run / 'best.pt'})", soft_wrap=True)
    if summary["best_gan"]:
        best = summary["best_gan"]
        held = (f"{run / 'best_gan.pt'}, the file slsnet.card ships"
                if (run / "best_gan.pt").is_file() else "no best_gan.pt: the run predates it")
        console.print(f"best adversarial: epoch {best['epoch']}, val JSC {best['val_jsc']:.4f} "
                      f"({held})", soft_wrap=True)
    if summary["val_jsc_per_epoch"] is not None:
        console.print(f"val JSC over the last {len(summary['recent'])} epochs: "
                      f"{summary['val_jsc_per_epoch']:+.4f} an epoch")
    if summary["last_epoch_at"] is not None:
        ago = time.time() - summary["last_epoch_at"]
        stamp = time.strftime("%Y-%m-%d %H:%M", time.localtime(summary["last_epoch_at"]))
        console.print(f"last epoch ended {stamp} ({_duration(max(ago, 0))} ago)")
    if epoch >= total:
        console.print("the run has ended")
    else:
        text = f"left: {total - epoch} epochs"
        if summary["seconds_left"]:
            text += f", about {_duration(summary['seconds_left'])} of the timed kinds"
        if summary["not_timed"]:
            text += f"; not timed yet: {', '.join(summary['not_timed'])}"
        console.print(text + " (resume with the run's command and --resume)")


def main(argv: list[str] | None = None) -> int:
    """Print where the run stands; 2 when the folder is not a run."""
    parser = argparse.ArgumentParser(prog="python -m slsnet.progress", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", help="the run folder (slsnet.train --out)")
    parser.add_argument("--last", type=int, default=5, help="epochs in the table (default: 5)")
    parser.add_argument("--against", metavar="OTHER",
                        help="another run folder, or weights whose card holds their run's "
                        "curve, set beside this one epoch by epoch")
    parser.add_argument("--json", dest="json_out", help="write the summary here")
    args = parser.parse_args(argv)
    if args.last < 1:
        print(f"error: --last must be at least 1, not {args.last}", file=sys.stderr)
        return 2
    run = Path(args.run)
    try:
        run_args, log = read_run(run)
        summary = summarise(run_args, log, last=args.last)
        if args.against:
            summary["against"] = {"run": args.against, "epochs": side_by_side(
                log, read_other(Path(args.against)), last=args.last)}
    except (FileNotFoundError, ValueError, KeyError, WeightsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    console = Console()
    if not console.is_terminal:  # a log or a pipe: wide enough for every column, not 80
        console = Console(width=max(console.width, 110))
    show(run, summary, console)
    if args.against:
        show_side_by_side(run, Path(args.against), summary["against"]["epochs"], console)
    if args.json_out and (problem := write_json(args.json_out, summary)):
        print(problem, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
