"""``python -m slsnet.train_bench``: images/s of one real training step, variant by variant.

Each variant runs the training step of ``slsnet.train`` (the adversarial game, or the
supervised terms alone) on batches that the real data pipeline makes from ISIC images (loading
done once, then augmentation and batching inside the timed loop), so a data bottleneck shows: the
table gives the whole step's rate and the share of it spent making batches.

Variants: input size, step kind (``gan``/``sup``), precision (``fp32``, and ``bf16`` autocast
only where the CPU has native bf16 instructions, or on a GPU), memory layout (contiguous or
channels_last) and CPU threads.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from slsnet.config import SLSNetConfig
from slsnet.data import Batches, find_pairs, load_arrays
from slsnet.device import cpu_flags, cpu_name, resolve_device
from slsnet.gan import GANTrainer, Hyper

BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # /proc/cpuinfo flags of native bf16 arithmetic


def cpu_bf16_flags() -> list[str]:
    """The native-bf16 instruction flags this CPU reports (empty where it has none)."""
    return cpu_flags(BF16_FLAGS)


def measure(
    images: np.ndarray,
    masks: np.ndarray,
    *,
    size: int,
    kind: str,
    precision: str,
    layout: str,
    threads: int,
    batch_size: int,
    steps: int,
    device: torch.device,
) -> dict:
    """Median images/s over ``steps`` timed steps (after one warm-up) and the batch share."""
    if device.type == "cpu":
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    trainer = GANTrainer(SLSNetConfig(input_size=size), Hyper(amp=precision == "bf16"), device)
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    trainer.generator.to(memory_format=fmt)
    trainer.discriminator.to(memory_format=fmt)
    batches = Batches(images, masks, batch_size, rng, size=size)
    step_s, batch_s = [], []
    it = iter(())
    for i in range(steps + 1):
        t0 = time.perf_counter()
        try:
            x, y = next(it)
        except StopIteration:
            it = iter(batches)
            x, y = next(it)
        t1 = time.perf_counter()
        trainer.step(x.contiguous(memory_format=fmt), y, adversarial=kind == "gan")
        if device.type == "cuda":
            torch.cuda.synchronize()
        t2 = time.perf_counter()
        if i:  # the first step warms up allocators and kernels
            step_s.append(t2 - t0)
            batch_s.append(t1 - t0)
    median = statistics.median(step_s)
    return {
        "size": size, "kind": kind, "precision": precision, "layout": layout,
        "threads": threads if device.type == "cpu" else None,
        "images_per_s": batch_size / median,
        "batch_share": statistics.median(batch_s) / median,
        "steps": steps,
    }


def build_parser() -> argparse.ArgumentParser:
    """Command-line flags."""
    p = argparse.ArgumentParser(prog="python -m slsnet.train_bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="../shared/data/isic2017/train",
                   help="an images/ + masks/ folder to draw batches from")
    p.add_argument("--images", type=int, default=64, help="images loaded from --data")
    p.add_argument("--sizes", default="64,96,128")
    p.add_argument("--kinds", default="gan,sup")
    p.add_argument("--precisions", default="fp32,bf16",
                   help="bf16 is measured only where the CPU has native bf16 (or on a GPU)")
    p.add_argument("--layouts", default="contiguous,channels_last")
    p.add_argument("--threads", default="1,2", help="CPU thread counts")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--steps", type=int, default=4, help="timed steps per variant")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--json", metavar="OUT", help="also write the results as JSON")
    return p


def _ints(text: str, name: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"--{name} is a comma-separated list of whole numbers, not {text!r}"
                         ) from None


def _choices(text: str, name: str, allowed: tuple[str, ...]) -> list[str]:
    values = [v.strip() for v in text.split(",") if v.strip()]
    bad = [v for v in values if v not in allowed]
    if bad or not values:
        raise ValueError(f"--{name}: {bad or text!r} not among {', '.join(allowed)}")
    return values


def run(args: argparse.Namespace) -> dict:
    """Measure every variant; returns the report (machine, variants, skipped)."""
    device = resolve_device(args.device)
    sizes = _ints(args.sizes, "sizes")
    threads = _ints(args.threads, "threads") if device.type == "cpu" else [0]
    kinds = _choices(args.kinds, "kinds", ("gan", "sup"))
    precisions = _choices(args.precisions, "precisions", ("fp32", "bf16"))
    layouts = _choices(args.layouts, "layouts", ("contiguous", "channels_last"))
    if any(s <= 0 or s % 8 for s in sizes):
        raise ValueError("--sizes must be positive multiples of 8")
    bf16 = cpu_bf16_flags() if device.type == "cpu" else ["cuda"]
    skipped = []
    if "bf16" in precisions and not bf16:
        precisions.remove("bf16")
        skipped.append("bf16: this CPU has no native bf16 instructions "
                       f"({' / '.join(BF16_FLAGS)} absent), so autocast would emulate it")
    pairs = find_pairs(args.data)[: args.images]
    images, masks = load_arrays(pairs, max(sizes))
    console = Console(stderr=True)
    rows = []
    for size, kind, precision, layout, n in itertools.product(
            sizes, kinds, precisions, layouts, threads):
        row = measure(images, masks, size=size, kind=kind, precision=precision, layout=layout,
                      threads=n, batch_size=args.batch_size, steps=args.steps, device=device)
        console.log(f"{size} {kind} {precision} {layout} threads {n or '-'}: "
                    f"{row['images_per_s']:.2f} img/s")
        rows.append(row)
    table = Table(title=f"training step, batch {args.batch_size}, on {device}")
    for col in ("size", "step", "precision", "layout", "threads", "images/s", "batch share"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(str(r["size"]), r["kind"], r["precision"], r["layout"],
                      str(r["threads"] or "-"), f"{r['images_per_s']:.2f}",
                      f"{100 * r['batch_share']:.1f} %")
    console.print(table)
    for line in skipped:
        console.print(f"skipped {line}")
    return {
        "command": "python -m slsnet.train_bench " + " ".join(sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d"),
        "machine": {"cpu": cpu_name(),
                    "bf16_flags": bf16 if device.type == "cpu" else [],
                    "torch": torch.__version__, "device": str(device),
                    "gpu": torch.cuda.get_device_name() if device.type == "cuda" else None},
        "batch_size": args.batch_size, "images": len(pairs),
        "variants": rows, "skipped": skipped,
    }


def main(argv: list[str] | None = None) -> int:
    """Entry point; a bad flag or folder is one error line and exit code 2."""
    args = build_parser().parse_args(argv)
    try:
        report = run(args)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
