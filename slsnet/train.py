"""``python -m slsnet.train``: adversarial training of SLSNet (paper §3.4, §4.3), resumable.

Per batch: one discriminator step (real pairs vs generated pairs, the fake detached), then one
generator step (adversarial + λ·L1 + α·Jaccard). Each epoch writes ``last.pt`` (everything needed
to continue exactly), ``best.pt`` (generator with the best val JSC), ``best_gan.pt`` (the best
among adversarial epochs: the weights to ship, since SLSNet is a GAN), a line of ``log.jsonl``
and ``curves.png`` into the run folder.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch

from slsnet.batchnorm import calibrated, spread
from slsnet.card import parent_record
from slsnet.checkpoint import WeightsError, load_generator, save_generator
from slsnet.config import SLSNetConfig
from slsnet.curves import draw_curves
from slsnet.data import Batches, Pair, find_pairs, load_arrays, read_mask, resize_to_input
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
from slsnet.schedule import Phase, phase_of
from slsnet.time_budget import TimeBudget
from slsnet.train_args import (
    build_parser,
    check_args,
    dropouts,
    grey_p,
    learning_rate,
    resolve_phases,
)


def _scored_arrays(pairs: list[Pair], size: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """Images at ``size`` and full-size masks of ``pairs``: what an epoch is scored on."""
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

    check_args(args)
    console = Console(stderr=True)
    budget = None
    if args.time_budget:  # counted from here; a resumed run knows its epochs' times at once
        earlier = read_log(Path(args.out) / "log.jsonl") if args.resume else []
        budget = TimeBudget(args.time_budget, earlier)
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

    ckpt = torch.load(ckpt_path, map_location=device, weights_only=True) if args.resume else None
    # a resumed run and fine-tuned weights keep the network's colour constancy
    saved_p = ckpt["config"].get("grey_p", 0.0) if ckpt else init.config.grey_p if init else 0.0
    config = SLSNetConfig(input_size=args.size,
                          grey_p=grey_p(args, saved_p, resumed=ckpt is not None),
                          **dropouts(args.dropout))
    hyper = Hyper(
        lr=args.lr,
        l1_weight=args.l1_weight,
        jaccard_weight=args.jaccard_weight,
        adversarial_weight=args.adv_weight,
        bce_weight=args.bce_weight,
        lovasz_weight=args.lovasz_weight,
        betas=(args.beta1, 0.999),
        amp=args.amp,
        ema_decay=args.ema_decay,
        d_lr_scale=args.d_lr_scale,
        weight_decay=args.weight_decay,
    )
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    trainer = GANTrainer(config, hyper, device)
    start_epoch, best_jsc, best_gan_jsc = 0, -1.0, -1.0
    if ckpt is not None:
        trainer.load_state(ckpt["trainer"])
        set_rng_state(rng, ckpt["rng"])
        start_epoch, best_jsc = ckpt["epoch"], ckpt["best_jsc"]
        best_gan_jsc = ckpt.get("best_gan_jsc", -1.0)  # absent in runs from before best_gan.pt
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
    val_images, val_masks = _scored_arrays(find_pairs(data / "val")[: args.val_limit or None],
                                           args.size)
    # the learning curve's training images, spread over the set like the statistics' below
    seen_images, seen_masks = (
        _scored_arrays([pairs[i] for i in spread(len(pairs), args.train_eval)], args.size)
        if args.train_eval else (None, None))
    bn_images = images[spread(len(images), args.bn_images)] if args.bn_images else None
    if bn_images is not None and bn_images.shape[1] != args.size:
        bn_images = _shrunk(bn_images, args.size)

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
            meta = {"epoch": epoch, "val": val, "args": vars(args)}
            if val["jsc"] > best_jsc:
                best_jsc = val["jsc"]
                save_generator(model, out / "best.pt", meta=meta)
            if phase.adversarial and val["jsc"] > best_gan_jsc:
                best_gan_jsc = val["jsc"]
                save_generator(model, out / "best_gan.pt", meta=meta)
            save_generator(
                model, out / "last_generator.pt", meta={"epoch": epoch, "val": val}
            )
            if args.keep_epochs:
                save_generator(model, out / "epochs" / f"{epoch:03d}.pt", meta=meta)
            # the log line first, then last.pt as the commit: after a crash between the two,
            # --resume drops the line of the epoch that last.pt does not hold
            append_log(out / "log.jsonl", record)
            state = {
                "trainer": trainer.state(),
                "rng": rng_state(rng),
                "epoch": epoch,
                "best_jsc": best_jsc,
                "best_gan_jsc": best_gan_jsc,
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
    args = build_parser(__doc__).parse_args(argv)
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
