r"""``python -m slsnet.average``: one generator whose weights are the mean of several.

The generators a run passes through late in training, at a low learning rate, lie in one basin
of the loss; their mean lies nearer its centre and can generalise better than any of them
(stochastic weight averaging, Izmailov et al. 2018), or only as well as their average
(docs/benchmarks.md measures it). ``slsnet.train --keep-epochs`` keeps every epoch's generator
in ``RUN/epochs/``; this command averages the ones named:

    python -m slsnet.average --data ../shared/data/isic2017 --out runs/a/average.pt \\
        runs/a/epochs/04[3-9].pt runs/a/epochs/05?.pt runs/a/epochs/060.pt

Separately trained runs usually do not lie in one basin, and their mean can be worse than
either. BatchNorm statistics are measured afresh on training images spread over the set
(:func:`slsnet.batchnorm.calibrated`, as ``slsnet.train`` scores and saves its epochs): the mean
of several networks' statistics is not the statistics of the mean network. The result is an
ordinary weights file; ``slsnet.evaluate`` and ``slsnet.choose`` take it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from slsnet.batchnorm import calibrated, spread
from slsnet.checkpoint import WeightsError, load_generator, save_generator
from slsnet.data import find_pairs, load_arrays
from slsnet.device import resolve_device
from slsnet.generator import Generator, build_generator


def averaged(generators: list[Generator]) -> Generator:
    """A copy of the first generator with every floating-point tensor the mean over all.

    Integer buffers (BatchNorm's batch counts) are the first's.

    Raises:
        WeightsError: fewer than two generators, or generators of different configs.
    """
    if len(generators) < 2:
        raise WeightsError("averaging needs at least two weights files")
    first = generators[0]
    for other in generators[1:]:
        if other.config != first.config:
            raise WeightsError(f"weights of different networks cannot be averaged: "
                               f"{first.config} and {other.config}")
    states = [g.state_dict() for g in generators]
    mean = {
        name: (torch.stack([s[name].float() for s in states]).mean(0).to(tensor.dtype)
               if tensor.is_floating_point() else tensor.clone())
        for name, tensor in states[0].items()
    }
    result = build_generator(config=first.config).eval()
    result.load_state_dict(mean)
    return result


def main(argv: list[str] | None = None) -> int:
    """Average weights files into one; user errors end with one line and exit code 2."""
    parser = argparse.ArgumentParser(prog="python -m slsnet.average", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("weights", nargs="+", help="the weights files to average (two or more)")
    parser.add_argument("--out", required=True, help="the averaged weights file to write")
    parser.add_argument("--data", required=True,
                        help="the training data root (DIR/train/{images,masks}), for the "
                        "BatchNorm statistics")
    parser.add_argument("--bn-images", type=int, default=256, metavar="N",
                        help="training images, spread over the set, to measure the statistics "
                        "on (as slsnet.train's --bn-images)")
    parser.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"])
    args = parser.parse_args(argv)

    out = Path(args.out)
    try:
        if args.bn_images < 1:
            raise ValueError(f"--bn-images must be at least 1, not {args.bn_images}")
        if out.resolve() in {Path(w).resolve() for w in args.weights}:
            raise ValueError(f"--out {out} is one of the files to average")
        device = resolve_device(args.device)
        generators = [load_generator(w) for w in args.weights]
        mean = averaged(generators)
        pairs = find_pairs(Path(args.data) / "train")
    except (FileNotFoundError, ValueError, WeightsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    images, _ = load_arrays([pairs[i] for i in spread(len(pairs), args.bn_images)],
                            mean.config.input_size)
    model = calibrated(mean.to(device), images, device)
    sources = [{"path": str(w), "epoch": getattr(g, "meta", {}).get("epoch")}
               for w, g in zip(args.weights, generators, strict=True)]
    epochs = [s["epoch"] for s in sources if isinstance(s["epoch"], int)]
    meta = {
        "epoch": max(epochs) if epochs else None,
        "averaged": sources,
        "statistics": f"measured on {len(images)} training images spread over the set",
    }
    save_generator(model, out, meta=meta)
    print(f"{out}: the mean of {len(generators)} generators"
          + (f" (epochs {min(epochs)}-{max(epochs)})" if epochs else "")
          + f", BatchNorm statistics measured on {len(images)} training images")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
