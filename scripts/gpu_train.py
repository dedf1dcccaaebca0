"""Training on a lent GPU inside a fixed wall-clock budget: one main run and runs beside it.

    python scripts/gpu_train.py --data DIR --out RUNS --seconds S [--dry-run]

1. Measures images/s of the training step on this GPU for each (size, kind) the runs use
   (``slsnet.train_bench.measure``, real batches, batch 16).
2. Sizes the main run: every epoch that fits in what is left of ``--seconds``, split 50/25/25
   between 64-pixel supervised, 128-pixel supervised and 128-pixel adversarial epochs. Runs
   beside it (a step is bound by kernel launches, not by the GPU's arithmetic; on an H200,
   2026-12-04, five batch-16 runs side by side each kept the speed of one alone):
   ``--beside variants`` (default): the main recipe with colour jitter and with another seed,
   same schedule, so the three can be compared at equal cost; ``--beside comparisons``: the
   fixed-schedule comparisons of docs/benchmarks.md (equal cost on a 2-core CPU).
3. Starts every run as its own ``slsnet.train`` process at once, and stops any still running at
   the deadline (a stopped run keeps its last finished epoch).

With ``--init WEIGHTS`` the runs continue from trained weights instead (fine-tuning, all at
128 pixels, 60 % supervised then 40 % adversarial epochs): the candidates of
:data:`FINETUNE`, side by side, each sized to the budget with :data:`SIDE_BY_SIDE` slack.

``--dry-run`` prints the plan from assumed rates without a GPU or data.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

SIZES_KINDS = [(64, "sup"), (64, "gan"), (128, "sup"), (128, "gan")]
BATCH = 16  # the comparisons'
MAIN_BATCH = 64  # the main run's: a step costs about the same at 16 or 64 (launch-bound)
EPOCH_OVERHEAD_S = 2.0  # validation, training-subset score, curves and checkpoints per epoch
COMMON = ["--lr-schedule", "cosine", "--lr-warmup", "1", "--beta1",
          "0.9", "--bce-weight", "1", "--jaccard-weight", "1", "--l1-weight", "0",
          "--adv-weight", "0.1", "--ema-decay", "0.995", "--device", "cuda", "--threads", "2"]
COMPARISON_ARGS = ["--batch-size", str(BATCH), "--lr", "1e-3", "--seed", "1"]
MAIN_BATCH_ARGS = ["--batch-size", str(MAIN_BATCH)]
MAIN_ARGS = [*MAIN_BATCH_ARGS, "--lr", "2e-3"]  # sqrt scaling from 16 at 1e-3
# Comparisons, each pair at equal cost on a 2-core CPU (images/s at batch 8, 2 threads, idle
# EPYC: sup 26 at 64 and 4.8 at 128, gan 18 at 64 and 3.3 at 128):
COMPARISONS = {
    # how a 64-pixel sample is made: the same schedule, and so the same CPU time
    "shrink": ["--schedule", "64:12:sup,128:2:sup", "--low-res", "shrink"],
    "crop": ["--schedule", "64:12:sup,128:2:sup", "--low-res", "crop"],
    # a supervised warm-up, then the game (12/26 + 2/4.8 + 2/3.3 = 1.48 CPU units) vs
    # the game from the first step with the same share at 64 (8/18 + 3/3.3 = 1.35, one fewer
    # 128 epoch would be 1.05)
    "warmup_gan": ["--schedule", "64:12:sup,128:2:sup,128:2:gan", "--low-res", "shrink"],
    "gan_only": ["--schedule", "64:8:gan,128:3:gan", "--low-res", "shrink"],
}
# Fine-tuning candidates from --init (their learning rate restarts on a cosine from these); two
# seeds of one setting say how far seeds alone move val JSC.
FINETUNE = {
    "ft_lr1e-3": ["--lr", "1e-3", "--seed", "0"],
    "ft_lr1e-3_seed1": ["--lr", "1e-3", "--seed", "1"],
    "ft_lr3e-4": ["--lr", "3e-4", "--seed", "0"],
}
# The main recipe's variants, run beside it on the same schedule.
VARIANTS = {
    "main_colour": ["--colour", "0.5"],
    "main_seed1": ["--seed", "1"],
}
SIDE_BY_SIDE = 1.5  # assumed slow-down of each of three batch-64 runs on one GPU
COMPARISON_IMAGES = 1000  # the first 1000 training images: relative answers at half the cost
MAIN_EXTRA = ["--low-res", "shrink", "--zoom", "0.3", "--max-zoom", "3", "--zoom-aim", "lesion",
              "--rotate", "0.3"]


def rates_on_gpu(data: Path) -> dict[tuple[int, str], float]:
    """Images/s of one step per (size, kind) on this GPU, alone, with real batches."""
    import torch

    from slsnet.data import find_pairs, load_arrays
    from slsnet.train_bench import measure

    images, masks = load_arrays(find_pairs(data / "train")[:256], 128)
    return {(s, k): measure(images, masks, size=s, kind=k, precision="fp32",
                            layout="contiguous", threads=0, batch_size=MAIN_BATCH, steps=5,
                            device=torch.device("cuda"))["images_per_s"]
            for s, k in SIZES_KINDS}


def cost(schedule: str, rates: dict, n_images: int) -> float:
    """Seconds of GPU time a schedule's steps need alone.

    Epoch overheads (validation, checkpoints) run on the CPU side, beside the other runs' steps.
    """
    total = 0.0
    for item in schedule.split(","):
        size, epochs, kind = item.split(":")
        total += int(epochs) * n_images / rates[(int(size), kind)]
    return total


def main_schedule(budget_s: float, rates: dict, n_images: int) -> str:
    """The 64-sup / 128-sup / 128-gan epochs that fill ``budget_s`` in a 50/25/25 split."""
    parts = []
    for (size, kind), share in (((64, "sup"), 0.5), ((128, "sup"), 0.25), ((128, "gan"), 0.25)):
        per_epoch = n_images / rates[(size, kind)] + EPOCH_OVERHEAD_S
        parts.append(f"{size}:{max(1, int(share * budget_s / per_epoch))}:{kind}")
    return ",".join(parts)


def finetune_schedule(budget_s: float, rates: dict, n_images: int) -> str:
    """128-pixel supervised then adversarial epochs (60/40) that fill ``budget_s`` side by side."""
    parts = []
    for kind, share in (("sup", 0.6), ("gan", 0.4)):
        per_epoch = SIDE_BY_SIDE * n_images / rates[(128, kind)] + EPOCH_OVERHEAD_S
        parts.append(f"128:{max(1, int(share * budget_s / per_epoch))}:{kind}")
    return ",".join(parts)


def plan_runs(plan: dict, init: Path | None, beside: str = "variants") -> dict[str, list[str]]:
    """Each run's own flags (after the common ones)."""
    if init is not None:
        return {name: ["--init", str(init), "--schedule", plan["finetune"], *MAIN_BATCH_ARGS,
                       *extra, *MAIN_EXTRA] for name, extra in FINETUNE.items()}
    main = ["--schedule", plan["main"], *MAIN_ARGS, *MAIN_EXTRA]
    if beside == "variants":
        return {"main": main, **{k: [*main, *v] for k, v in VARIANTS.items()}}
    return {"main": main, **{k: [*v, *COMPARISON_ARGS, "--limit", str(COMPARISON_IMAGES)]
                             for k, v in COMPARISONS.items()}}


def main(argv: list[str] | None = None) -> int:
    """Plan, start and time-box the runs; writes ``plan.json`` into ``--out``."""
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--seconds", type=float, required=True, help="wall-clock budget, all runs")
    p.add_argument("--images", type=int, default=2000, help="training images in --data")
    p.add_argument("--init", type=Path, help="fine-tune these weights (the FINETUNE runs)")
    p.add_argument("--beside", choices=("variants", "comparisons"), default="variants",
                   help="what runs beside the main run (see above)")
    p.add_argument("--dry-run", action="store_true")
    args = p.parse_args(argv)
    if args.init is not None and not args.dry_run and not args.init.is_file():
        p.error(f"--init {args.init}: no such file")
    start = time.monotonic()
    if args.dry_run:
        rates = {(64, "sup"): 300.0, (64, "gan"): 240.0, (128, "sup"): 250.0,
                 (128, "gan"): 220.0}
    else:
        rates = rates_on_gpu(args.data)
    left = args.seconds - (time.monotonic() - start)
    main_budget = 0.85 * left  # 15 % kept for start-up and the last epoch
    plan: dict = {"rates_images_per_s": {f"{s}:{k}": r for (s, k), r in rates.items()},
                  "budget_s": left}
    if args.init is not None:
        plan |= {"init": str(args.init),
                 "finetune": finetune_schedule(max(main_budget, 60.0), rates, args.images)}
    elif args.beside == "comparisons":
        plan |= {"comparisons_gpu_s": sum(cost(extra[1], rates, COMPARISON_IMAGES)
                                          for extra in COMPARISONS.values()),
                 "main": main_schedule(max(main_budget, 60.0), rates, args.images)}
    else:  # three runs of the main schedule side by side
        slow = {key: rate / SIDE_BY_SIDE for key, rate in rates.items()}
        plan |= {"beside": sorted(VARIANTS),
                 "main": main_schedule(max(main_budget, 60.0), slow, args.images)}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "plan.json").write_text(json.dumps(plan, indent=2) + "\n")
    print(json.dumps(plan, indent=2), flush=True)
    if args.dry_run:
        return 0
    runs = plan_runs(plan, args.init, args.beside)
    procs = {}
    for name, extra in runs.items():
        cmd = [sys.executable, "-m", "slsnet.train", "--data", str(args.data),
               "--out", str(args.out / name), *COMMON, *extra]
        log = open(args.out / f"{name}.log", "w")  # noqa: SIM115 (closed with the process)
        procs[name] = (subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT), log)
    deadline = start + args.seconds
    while time.monotonic() < deadline and any(pr.poll() is None for pr, _ in procs.values()):
        time.sleep(2)
    for name, (proc, log) in procs.items():
        if proc.poll() is None:
            proc.terminate()  # slsnet.train ends cleanly on SIGTERM, after the epoch on disk
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        log.close()
        print(f"{name}: exit {proc.returncode}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
