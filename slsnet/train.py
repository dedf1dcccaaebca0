"""``python -m slsnet.train``: adversarial training of SLSNet (paper §3.4, §4.3), resumable.

Per batch: one discriminator step (real pairs vs generated pairs, the fake detached), then one
generator step (adversarial + λ·L1 + α·Jaccard). Each epoch writes ``last.pt`` (everything needed
to continue exactly), ``best.pt`` (generator with the best val JSC), a line of ``log.jsonl`` and
``curves.png`` into the run folder.
"""

from __future__ import annotations

import argparse
import json
import math
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch

from slsnet.batchnorm import calibrated
from slsnet.card import parent_record
from slsnet.checkpoint import WeightsError, load_generator, save_generator
from slsnet.config import SLSNetConfig
from slsnet.curves import draw_curves
from slsnet.data import Batches, find_pairs, load_arrays, read_mask, resize_to_input
from slsnet.device import describe, resolve_device
from slsnet.evaluate import evaluate_arrays
from slsnet.gan import GANTrainer, Hyper
from slsnet.run_files import (
    append_log,
    commit_checkpoint,
    read_log,
    rng_state,
    set_rng_state,
    signals_held,
    trim_log,
)
from slsnet.schedule import Phase, parse_schedule, phase_of, total_epochs
from slsnet.time_budget import TimeBudget, duration_arg


def build_parser() -> argparse.ArgumentParser:
    """Command-line flags, grouped as data / model / optimisation / run."""
    p = argparse.ArgumentParser(
        prog="python -m slsnet.train",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    g = p.add_argument_group("data")
    g.add_argument(
        "--data", required=True, help="folder with train/ and val/, each images/ + masks/"
    )
    g.add_argument("--limit", type=int, default=0, help="use only the first N training images")
    g.add_argument("--val-limit", type=int, default=0, help="use only the first N val images")
    g.add_argument("--zoom", type=float, default=0.0, metavar="P",
                   help="probability of a random zoom-in crop of a training image, as a "
                   "dermatoscope held close frames the lesion (0: off, the paper's setting)")
    g.add_argument("--max-zoom", type=float, default=2.0, help="largest zoom of those crops")
    g.add_argument("--zoom-aim", choices=["anywhere", "lesion"], default="anywhere",
                   help="where zoom crops lie: anywhere in the image, or over the lesion's "
                   "centre, as a scope held close over it (the lesion then fills the view)")
    g.add_argument("--rotate", type=float, default=0.0, metavar="P",
                   help="probability of turning a training image by a random angle "
                   "(0: off, the paper's setting: flips only)")
    g.add_argument("--colour", type=float, default=0.0, metavar="P",
                   help="probability of jittering a training image's hue (±16°), saturation "
                   "and brightness (0: off, the paper's setting: gamma and CLAHE only)")
    g.add_argument("--low-res", choices=["shrink", "crop"], default="shrink",
                   help="how a phase below the network's size makes its samples: the whole "
                   "image shrunk, or a window of the image at the network's size (the lesion "
                   "keeps its scale in pixels)")
    g.add_argument("--bn-images", type=int, default=256, metavar="N",
                   help="before each validation and save, measure BatchNorm statistics afresh on "
                   "the first N training images, unaugmented, at the network's size (0: keep "
                   "the running statistics of training)")
    g.add_argument("--train-eval", type=int, default=100, metavar="N",
                   help="score the first N training images (no augmentation) after every "
                   "epoch, for the learning curve next to val (0: off)")
    g = p.add_argument_group("model")
    g.add_argument("--size", type=int, default=None,
                   help="network input size (square; default 128, or the last phase's)")
    g.add_argument("--init", metavar="WEIGHTS",
                   help="start G from these weights (fine-tuning; D starts fresh)")
    g = p.add_argument_group("optimisation")
    g.add_argument("--epochs", type=int, default=None,
                   help="epochs (default 100, or the schedule's total)")
    g.add_argument("--schedule", metavar="SIZE:EPOCHS[:KIND],...",
                   help="phases of the run, e.g. 64:60:sup,128:10:sup,128:15:gan (KIND sup: "
                   "the supervised terms only, no discriminator; gan: the adversarial game, "
                   "the default); without it, one gan phase of --epochs at --size")
    g.add_argument("--batch-size", type=int, default=8)
    g.add_argument("--lr", type=float, default=2e-4)
    g.add_argument("--lr-schedule", choices=["constant", "cosine"], default="constant",
                   help="cosine: the rate falls from --lr to 0 over --epochs, step by step "
                   "(the paper: constant)")
    g.add_argument("--lr-warmup", type=float, default=0.0, metavar="E",
                   help="raise the rate linearly from 0 over the first E epochs (0: off); a "
                   "high rate from the first step can drive a fresh network to an all-skin "
                   "output for several epochs")
    g.add_argument("--l1-weight", type=float, default=0.1, help="λ of the L1 term")
    g.add_argument("--jaccard-weight", type=float, default=0.5, help="α of the Jaccard term")
    g.add_argument(
        "--adv-weight", type=float, default=1.0, help="weight of the adversarial term (paper: 1)"
    )
    g.add_argument("--bce-weight", type=float, default=0.0,
                   help="weight of a pixel-wise cross-entropy term (paper: 0)")
    g.add_argument("--beta1", type=float, default=0.5,
                   help="Adam's first-moment decay for G and D (paper: 0.5)")
    g.add_argument("--amp", action="store_true", help="bf16 autocast (measure before using)")
    g.add_argument("--ema-decay", type=float, default=0.0, metavar="D",
                   help="validate and save a moving average of G's weights, updated every step "
                   "with this decay (e.g. 0.998: ~500 steps); 0: off, the paper's setting")
    g = p.add_argument_group("run")
    g.add_argument("--out", required=True, help="run folder (checkpoints, log, curves)")
    g.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    g.add_argument("--stop-after", type=int, default=0, metavar="E",
                   help="end after epoch E (counted across the run), resumable with --resume: "
                   "a long run in slices, e.g. one a night (0: run to the end)")
    g.add_argument("--time-budget", type=duration_arg, metavar="DURATION",
                   help="start no epoch that would not end within this time of the start "
                   "(e.g. 2h40m, 90m): a machine lent for a few hours ends the run between "
                   "epochs, not in one; each epoch's time comes from the run's log")
    g.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    g.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: all cores)")
    g.add_argument("--seed", type=int, default=0)
    return p


def resolve_phases(args: argparse.Namespace) -> list[Phase]:
    """The run's phases from ``--schedule``, or one gan phase of ``--epochs`` at ``--size``.

    Fills in ``args.size`` (the last phase's: the size the network is shipped at) and
    ``args.epochs`` (the total) so the rest of the run, its log and card read them as before.
    """
    if args.schedule:
        phases = parse_schedule(args.schedule)
        for name, value in (("size", phases[-1].size), ("epochs", total_epochs(phases))):
            given = getattr(args, name)
            if given is not None and given != value:
                raise ValueError(f"--{name} {given} disagrees with --schedule {args.schedule} "
                                 f"({value}); give one or the other")
            setattr(args, name, value)
        return phases
    args.size = 128 if args.size is None else args.size
    args.epochs = 100 if args.epochs is None else args.epochs
    return [Phase(args.size, args.epochs, "gan")]


def learning_rate(args: argparse.Namespace, step: int, total: int, warmup: int = 0) -> float:
    """The rate for training step ``step`` (0-based) of ``total``: ``--lr``, or its cosine decay.

    The first ``warmup`` steps rise linearly to ``--lr``; the cosine then spans the rest. The
    schedule is a function of the step alone, so a resumed run takes it up where it stopped
    (given the same ``--epochs``).
    """
    if step < warmup:
        return args.lr * (step + 1) / warmup
    if args.lr_schedule == "constant":
        return args.lr
    return 0.5 * args.lr * (1 + math.cos(math.pi * (step - warmup) / max(total - warmup, 1)))


def _val_arrays(root: Path, size: int, limit: int) -> tuple[np.ndarray, list[np.ndarray]]:
    pairs = find_pairs(root)[: limit or None]
    images, _ = load_arrays(pairs, size)
    return images, [read_mask(p.mask) for p in pairs]


def _shrunk(images: np.ndarray | None, size: int) -> np.ndarray | None:
    if images is None:
        return None
    return np.stack([resize_to_input(im, size) for im in images])


def train(args: argparse.Namespace, argv: list[str] | None = None) -> dict:
    """Run (or resume) training as described by parsed ``args``; returns the last log record."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    console = Console(stderr=True)
    budget = None
    if args.time_budget:  # counted from here; a resumed run knows its epochs' times at once
        earlier = read_log(Path(args.out) / "log.jsonl") if args.resume else []
        budget = TimeBudget(args.time_budget, earlier)
    if not 0 <= args.ema_decay < 1:
        raise ValueError(f"--ema-decay must be in [0, 1), not {args.ema_decay}")
    if not 0 <= args.zoom <= 1:
        raise ValueError(f"--zoom is a probability in [0, 1], not {args.zoom}")
    if args.max_zoom < 1:
        raise ValueError(f"--max-zoom must be at least 1, not {args.max_zoom}")
    for name in ("rotate", "colour"):
        if not 0 <= getattr(args, name) <= 1:
            raise ValueError(f"--{name} is a probability in [0, 1], not {getattr(args, name)}")
    if not 0 <= args.beta1 < 1:
        raise ValueError(f"--beta1 must be in [0, 1), not {args.beta1}")
    phases = resolve_phases(args)
    device = resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    data = Path(args.data)
    ckpt_path = out / "last.pt"
    if args.resume and not ckpt_path.is_file():
        raise SystemExit(f"error: --resume but {ckpt_path} does not exist")
    if not args.resume and ckpt_path.exists():
        raise SystemExit(f"error: {out} already holds a run; pass --resume or choose another --out")
    init = load_generator(args.init, device=device) if args.init and not args.resume else None

    config = SLSNetConfig(input_size=args.size)
    hyper = Hyper(
        lr=args.lr,
        l1_weight=args.l1_weight,
        jaccard_weight=args.jaccard_weight,
        adversarial_weight=args.adv_weight,
        bce_weight=args.bce_weight,
        betas=(args.beta1, 0.999),
        amp=args.amp,
        ema_decay=args.ema_decay,
    )
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    trainer = GANTrainer(config, hyper, device)
    start_epoch, best_jsc = 0, -1.0
    if args.resume:
        ckpt = torch.load(ckpt_path, map_location=device, weights_only=True)
        trainer.load_state(ckpt["trainer"])
        set_rng_state(rng, ckpt["rng"])
        start_epoch, best_jsc = ckpt["epoch"], ckpt["best_jsc"]
        console.log(f"resumed {ckpt_path} after epoch {start_epoch} (best val JSC {best_jsc:.4f})")
        trim_log(out / "log.jsonl", start_epoch)
    elif init is not None:
        trainer.start_from(init)
    out.mkdir(parents=True, exist_ok=True)  # only now: a refused --init leaves no run folder
    if init is not None:  # as the weights' card is now: the file at --init may be replaced later
        (out / "init.json").write_text(json.dumps(parent_record(args.init), indent=2))
    (out / "args.json").write_text(json.dumps(vars(args) | {"config": config.to_dict()}, indent=2))
    with open(out / "commands.jsonl", "a") as f:  # every invocation, so phases stay on record
        record = {
            "from_epoch": start_epoch,
            "hardware": describe(device),
            "argv": sys.argv[1:] if argv is None else argv,
            "args": vars(args),
        }
        f.write(json.dumps(record) + "\n")

    pairs = find_pairs(data / "train")[: args.limit or None]
    # zoom crops are cut from arrays stored larger, so a 2× crop still has the input's detail
    stored = round(args.size * args.max_zoom) if args.zoom > 0 else args.size
    images, masks = load_arrays(pairs, stored)
    val_images, val_masks = _val_arrays(data / "val", args.size, args.val_limit)
    seen_images, seen_masks = (_val_arrays(data / "train", args.size, args.train_eval)
                               if args.train_eval else (None, None))
    bn_images = (images[: args.bn_images] if images.shape[1] == args.size else
                 _shrunk(images[: args.bn_images], args.size)) if args.bn_images else None

    def batches_for(phase: Phase) -> Batches:
        return Batches(images, masks, args.batch_size, rng, size=phase.size, zoom=args.zoom,
                       max_zoom=args.max_zoom, aim=args.zoom_aim == "lesion", turn=args.rotate,
                       colour=args.colour,
                       view=args.size if args.low_res == "crop" else None)

    steps_per_epoch = len(batches_for(phases[0]))
    console.log(
        f"{len(images)} train / {len(val_images)} val images on {device}, "
        f"{torch.get_num_threads()} threads; phases {', '.join(map(str, phases))}"
    )

    record: dict = {}
    columns = [
        TextColumn("epoch {task.fields[epoch]}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeRemainingColumn(),
    ]
    last = min(args.epochs, args.stop_after) if args.stop_after > 0 else args.epochs
    for epoch in range(start_epoch + 1, last + 1):
        phase_index, phase = phase_of(phases, epoch)
        if budget is not None and not budget.fits(phase.size, phase.kind):
            took = budget.estimate(phase.size, phase.kind)
            console.log(f"time budget: epoch {epoch} ({phase}) takes about "
                        f"{(took or 0) / 60:.1f} min and {max(budget.left(), 0) / 60:.1f} min "
                        f"are left; stopping after epoch {epoch - 1} (continue with --resume)")
            break
        batches = batches_for(phase)
        sums: dict[str, float] = {}
        t0 = time.perf_counter()
        with Progress(*columns, console=console, transient=True) as bar:
            task = bar.add_task("train", total=len(batches), epoch=epoch, info="")
            for i, (x, y) in enumerate(batches, 1):
                trainer.set_lr(learning_rate(args, (epoch - 1) * steps_per_epoch + i - 1,
                                             args.epochs * steps_per_epoch,
                                             round(args.lr_warmup * steps_per_epoch)))
                losses = trainer.step(x, y, adversarial=phase.adversarial)
                for k, v in losses.items():
                    sums[k] = sums.get(k, 0.0) + v
                ips = i * args.batch_size / (time.perf_counter() - t0)
                info = f"G {losses['g_total']:.3f} D {losses['d_total']:.3f} {ips:.1f} img/s"
                bar.update(task, advance=1, info=info)
                if not console.is_terminal and (i % 25 == 0 or i == len(batches)):
                    console.log(f"epoch {epoch} batch {i}/{len(batches)} {info}")
        train_s = time.perf_counter() - t0
        model = calibrated(trainer.averaged, bn_images, device)  # what is scored and saved
        val = evaluate_arrays(model, val_images, val_masks, device=device).mean()
        # below the shipped size, also the view the phase trains on: whether it learns there
        at_size = (evaluate_arrays(calibrated(trainer.averaged, _shrunk(bn_images, phase.size),
                                              device), _shrunk(val_images, phase.size),
                                   val_masks, device=device).mean()
                   if phase.size != args.size else None)
        seen = (evaluate_arrays(model, seen_images, seen_masks, device=device).mean()
                if seen_images is not None else None)
        record = {
            "epoch": epoch,
            "phase": phase_index + 1,
            "size": phase.size,
            "kind": phase.kind,
            **{k: v / len(batches) for k, v in sums.items()},
            "lr": trainer.opt_g.param_groups[0]["lr"],
            "images_per_s": len(images) / train_s,
            "train_seconds": train_s,
            "val": val,
            **({"train_eval": seen} if seen is not None else {}),
            **({"val_at_size": at_size} if at_size is not None else {}),
            "time": time.time(),
        }
        with signals_held():  # a Ctrl-C or SIGTERM here lands after the epoch is on disk
            if val["jsc"] > best_jsc:
                best_jsc = val["jsc"]
                save_generator(
                    model,
                    out / "best.pt",
                    meta={"epoch": epoch, "val": val, "args": vars(args)},
                )
            save_generator(
                model, out / "last_generator.pt", meta={"epoch": epoch, "val": val}
            )
            # the log line first, then last.pt as the commit: after a crash between the two,
            # --resume drops the line of the epoch that last.pt does not hold
            append_log(out / "log.jsonl", record)
            state = {
                "trainer": trainer.state(),
                "rng": rng_state(rng),
                "epoch": epoch,
                "best_jsc": best_jsc,
                "config": config.to_dict(),
                "args": vars(args),
            }
            commit_checkpoint(ckpt_path, state)
        draw_curves(out / "log.jsonl", out / "curves.png")
        if budget is not None:
            budget.timed(phase.size, phase.kind, time.perf_counter() - t0)
        console.log(
            f"epoch {epoch} ({phase}): G {record['g_total']:.4f} D {record['d_total']:.4f} "
            + (f"train JSC {seen['jsc']:.4f} " if seen is not None else "")
            + f"val JSC {val['jsc']:.4f} DSC {val['dsc']:.4f} "
            + (f"(at {phase.size}: {at_size['jsc']:.4f}) " if at_size is not None else "")
            + f"({record['images_per_s']:.1f} img/s, best JSC {best_jsc:.4f})"
        )
    return record


def _stop(signum, frame) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    """Entry point; user errors end with one line and exit code 2.

    Ctrl-C and SIGTERM (``kill``, a job scheduler's stop) end the run the same way: checkpoints
    are written atomically, so the last finished epoch stays resumable.
    """
    args = build_parser().parse_args(argv)
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _stop) if main_thread else None
    try:
        train(args, argv)
    except (FileNotFoundError, ValueError, WeightsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "interrupted: the last finished epoch is in last.pt; continue with --resume",
            file=sys.stderr,
        )
        return 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
