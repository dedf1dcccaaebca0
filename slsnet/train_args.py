"""The command line of ``python -m slsnet.train``.

Its flags, their checks, the phases they describe and the learning rate they set for each step.
"""

from __future__ import annotations

import argparse
import math

from slsnet.schedule import Phase, parse_schedule, total_epochs
from slsnet.time_budget import duration_arg


def build_parser(description: str | None = None) -> argparse.ArgumentParser:
    """Command-line flags, grouped as data / model / optimisation / run."""
    p = argparse.ArgumentParser(
        prog="python -m slsnet.train",
        description=description,
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
                   "N training images spread evenly over the set (not the first N: in a data set "
                   "stored in the order it was collected, neighbours are alike), unaugmented, "
                   "at the network's size (0: keep the running statistics of training)")
    g.add_argument("--train-eval", type=int, default=100, metavar="N",
                   help="score N training images spread evenly over the set (no augmentation) "
                   "after every epoch, for the learning curve next to val (0: off)")
    g = p.add_argument_group("model")
    g.add_argument("--size", type=int, default=None,
                   help="network input size (square; default 128, or the last phase's)")
    g.add_argument("--init", metavar="WEIGHTS",
                   help="start G from these weights (fine-tuning; D starts fresh)")
    g.add_argument("--dropout", default=None, metavar="MID,DEEP,DECODER",
                   help="the generator's dropout in its middle FAMs, its deep FAMs and its "
                        "decoder (default 0.03,0.3,0.1: ERFNet's encoder and pix2pix's noise; "
                        "0,0,0: off); only training uses it")
    g.add_argument("--grey-p", type=float, default=None, metavar="P",
                   help="Shades of Grey colour constancy as the generator's first layer: each "
                   "image's channels scaled to equal Minkowski p-means (6: the usual choice "
                   "for dermoscopy; 0: none). It is part of the network, so every engine "
                   "applies it. Default: that of the --init weights or the resumed run, else "
                   "none")
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
    g.add_argument("--lovasz-weight", type=float, default=0.0,
                   help="weight of the Lovász extension of the Jaccard distance, a tighter "
                   "surrogate of 1 - IoU than the soft Jaccard (paper: 0)")
    g.add_argument("--beta1", type=float, default=0.5,
                   help="Adam's first-moment decay for G and D (paper: 0.5)")
    g.add_argument("--d-lr-scale", type=float, default=1.0, metavar="S",
                   help="the discriminator's learning rate is the generator's times S (the "
                   "paper: 1); below 1 slows a discriminator that wins the game too soon")
    g.add_argument("--weight-decay", type=float, default=0.0, metavar="W",
                   help="AdamW's decoupled weight decay of G's convolution and linear weights "
                   "(not BatchNorm, biases or the attention γ); 0: Adam, the paper's setting")
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
    g.add_argument("--keep-epochs", action="store_true",
                   help="also keep every epoch's generator, as scored, in OUT/epochs/NNN.pt "
                   "(about 9 MB each): what python -m slsnet.average averages")
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


DROPOUTS = ("dropout_mid", "dropout_deep", "dropout_decoder")  # SLSNetConfig's, in --dropout order


def dropouts(text: str | None) -> dict[str, float]:
    """``--dropout "0.03,0.3,0.1"`` → SLSNetConfig's dropout fields; ``None`` → none (defaults).

    Raises:
        ValueError: not three probabilities in [0, 1).
    """
    if text is None:
        return {}
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) != 3 or not all(0 <= v < 1 for v in values):
        raise ValueError(f"--dropout is three probabilities in [0, 1) as MID,DEEP,DECODER, "
                         f"not {text}")
    return dict(zip(DROPOUTS, values, strict=True))


def check_args(args: argparse.Namespace) -> None:
    """Refuse values no run can use, with one line naming the flag (``ValueError``)."""
    if not 0 <= args.ema_decay < 1:
        raise ValueError(f"--ema-decay must be in [0, 1), not {args.ema_decay}")
    if not 0 <= args.zoom <= 1:
        raise ValueError(f"--zoom is a probability in [0, 1], not {args.zoom}")
    if args.max_zoom < 1:
        raise ValueError(f"--max-zoom must be at least 1, not {args.max_zoom}")
    for name in ("rotate", "colour"):
        if not 0 <= getattr(args, name) <= 1:
            raise ValueError(f"--{name} is a probability in [0, 1], not {getattr(args, name)}")
    if not args.d_lr_scale > 0:
        raise ValueError(f"--d-lr-scale must be above 0, not {args.d_lr_scale}")
    if not 0 <= args.beta1 < 1:
        raise ValueError(f"--beta1 must be in [0, 1), not {args.beta1}")
    if not 0 <= args.weight_decay < 1:
        raise ValueError(f"--weight-decay must be in [0, 1), not {args.weight_decay}")
    dropouts(args.dropout)
    if args.grey_p is not None and args.grey_p != 0 and not 1 <= args.grey_p < math.inf:
        raise ValueError(f"--grey-p is 0 (none) or a finite exponent of at least 1, "
                         f"not {args.grey_p}")


def grey_p(args: argparse.Namespace, saved: float, *, resumed: bool) -> float:
    """The run's ``--grey-p``: as given, else the resumed run's or the --init weights' (``saved``).

    Raises:
        ValueError: a resumed run given another value than it was trained with.
    """
    if args.grey_p is None:
        return saved
    if resumed and args.grey_p != saved:
        raise ValueError(f"the run was trained with --grey-p {saved:g}; resume it with "
                         f"that value or without the flag")
    return args.grey_p
