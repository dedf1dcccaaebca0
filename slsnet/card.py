"""``python -m slsnet.card``: turn a training run into shipped weights and a model card.

Copies the run's best generator to ``--out`` (``weights_only``-loadable): its best adversarial
epoch (``best_gan.pt``) when it played the game, since SLSNet is a GAN, else its best epoch
(``best.pt``); ``--from`` names another file of the run (``last.pt``: the last epoch as
training left it, running statistics and all). It re-measures it on the
validation folder with the evaluation code, and writes ``<out>.json``: architecture, size,
normalisation, threshold, data and split, epochs, each epoch's scores (``training.curve``),
hardware, wall time, metrics, command, citations.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from slsnet.checkpoint import WeightsError, load_generator, read_card, save_generator
from slsnet.config import INPUT_MEAN, INPUT_STD
from slsnet.curves import card_curve
from slsnet.data import find_pairs, read_mask, read_rgb
from slsnet.device import cpu_name
from slsnet.evaluate import score_views
from slsnet.info import count_params
from slsnet.schedule import phase_spans, run_phases

CITATIONS = [
    "Sarker M.M.K., Rashwan H.A., Akram F., et al. SLSNet: Skin lesion segmentation using a "
    "lightweight generative adversarial network. Expert Systems with Applications 183 (2021) "
    "115433.",
    "Codella N., Gutman D., Celebi M.E., et al. Skin lesion analysis toward melanoma detection: "
    "a challenge at the International Symposium on Biomedical Imaging (ISBI) 2017. "
    "arXiv:1710.05006.",
]


def _commands(run: Path) -> list[dict]:
    """Each ``slsnet.train`` invocation of the run, with the epoch it started from."""
    path = run / "commands.jsonl"
    if not path.is_file():
        args = json.loads((run / "args.json").read_text())
        return [{"from_epoch": 0, "command": f"python -m slsnet.train --data {args['data']} ..."}]
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [
        {"from_epoch": r["from_epoch"], "command": "python -m slsnet.train " + " ".join(r["argv"])}
        for r in rows
    ]


def _augmentation(args: dict) -> str:
    text = "h/v flips, gamma 0.5/1.0/1.5, CLAHE clip 1-2 (online)"
    if args.get("zoom"):
        text += (f"; before them, with probability {args['zoom']}, a random square crop of "
                 f"1/z of the image, z uniform in 1-{args['max_zoom']}")
        if args.get("zoom_aim") == "lesion":
            text += ", holding the lesion's centre"
    if args.get("rotate"):
        text += (f"; then, with probability {args['rotate']}, a rotation by a uniform random "
                 "angle (mirrored borders)")
    if args.get("colour"):
        text += (f"; last, with probability {args['colour']}, hue turned by up to ±16°, "
                 "saturation scaled by 0.75-1.25 and brightness by 0.8-1.2")
    return text


def _optimiser(args: dict) -> str:
    text = (f"Adam lr {args.get('lr')} betas ({args.get('beta1', 0.5)}, 0.999), one D step then "
            "one G step (G alone in supervised phases)")
    if args.get("weight_decay"):
        text += (f"; G's optimiser is AdamW, decoupled weight decay {args['weight_decay']} of its "
                 "convolution and linear weights")
    if args.get("lr_warmup"):
        text += f"; lr rises linearly over the first {args['lr_warmup']} epoch(s)"
    if args.get("lr_schedule") == "cosine":
        text += f"; lr follows a cosine from {args.get('lr')} to 0 over {args.get('epochs')} epochs"
    return text


def _phases(args: dict, log: list[dict]) -> list[dict]:
    """Each phase of the run as an object: epochs, size, kind, sample, and its last val JSC."""
    phases = []
    for first, last, phase in phase_spans(run_phases(args)):
        rows = [r for r in log if first <= r["epoch"] <= last]
        phases.append({
            "epochs": [first, last],
            "size": phase.size,
            "kind": "adversarial" if phase.adversarial else "supervised (no discriminator)",
            "sample": ("the whole image" if phase.size == args.get("size") else
                       "a window at the network's scale" if args.get("low_res") == "crop" else
                       "the whole image shrunk"),
            "epochs_run": len(rows),
            "val_jsc_at_end": round(rows[-1]["val"]["jsc"], 4) if rows else None,
        })
    return phases


def parent_record(weights: str) -> dict:
    """The weights' path with their card's training, evaluation and notes.

    What a fine-tuning run starts from; ``slsnet.train`` keeps it as ``init.json`` in the run.
    """
    card = read_card(weights)
    return {"weights": weights, **{k: card.get(k) for k in ("training", "evaluation", "notes")}}


def _parent(run: Path) -> dict | None:
    """The run's :func:`parent_record`, as written when it began; None for a run from scratch."""
    path = run / "init.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _hardware(run: Path, args: dict) -> str:
    """What the run trained on, as ``slsnet.train`` recorded it, else this machine's CPU."""
    path = run / "commands.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []
    seen = sorted({r["hardware"] for r in rows if r.get("hardware")})
    return "; ".join(seen) if seen else f"{cpu_name()}, {args.get('device')}"


SELECTION = {"best.pt": "best validation JSC over epochs",
             "best_gan.pt": "best validation JSC over the adversarial epochs",
             "last.pt": "the last epoch, with the running BatchNorm statistics of training"}


def _selection(source: str) -> str:
    """How the shipped file was chosen; only the best-of files were chosen on validation data."""
    if source == "last.pt":
        return f"{SELECTION[source]} ({source} of the run; not chosen on validation data)"
    return (f"{SELECTION.get(source, source)}, ISIC 2017 validation split "
            f"(150 images; {source} of the run)")


def pick(run: Path, name: str | None) -> Path:
    """The run's file to ship: ``name``, else ``best_gan.pt`` where it exists, else ``best.pt``."""
    if name is not None:
        return run / name
    return run / "best_gan.pt" if (run / "best_gan.pt").is_file() else run / "best.pt"


def build_card(run: Path, data: Path, out: Path, generator, val: dict, n_val: int,
               hardware: str | None = None, source: str = "best.pt",
               val_tta: dict | None = None) -> dict:
    """The model card dict for ``run`` (a folder written by ``slsnet.train``).

    A run that fine-tuned other weights (``--init``) records them and their own card's training,
    evaluation and notes under ``training.initialised_from``: the whole history stays on it.
    ``val`` and ``val_tta`` are the val scores of one view and of ``--tta``'s mirror mean.
    """
    args = json.loads((run / "args.json").read_text())
    log = [
        json.loads(line) for line in (run / "log.jsonl").read_text().splitlines() if line.strip()
    ]
    meta = getattr(generator, "meta", {})
    best_epoch = meta.get("epoch")
    return {
        "name": "SLSNet generator trained on ISIC 2017",
        "architecture": "SLSNet generator (Sarker et al. 2021), see slsnet/generator.py",
        "config": generator.config.to_dict(),
        "parameters": count_params(generator),
        "input": {
            "size_wh": [generator.config.input_size, generator.config.input_size],
            "colour": "RGB",
            "resize": "stretch to the square size (aspect not kept), area filter when shrinking",
            "normalisation": f"(pixel / 255 - {INPUT_MEAN}) / {INPUT_STD}",
            **({"colour_constancy": f"Shades of Grey, p = {generator.config.grey_p:g}, per "
                "image, inside the network (its first layer)"}
               if generator.config.grey_p else {}),
        },
        "output": "lesion probability per pixel; resize to the image size, then threshold",
        "threshold": generator.config.threshold,
        "training": {
            "data": "ISIC 2017 Task 1 training split (2000 dermoscopic images with expert masks, "
            "256x256 copies)",
            "selection": _selection(source),
            "epochs_run": len(log),
            "best_epoch": best_epoch,
            "batch_size": args.get("batch_size"),
            "arithmetic": ("bf16 autocast (--amp): convolutions and matrix products in bf16, "
                           "weights and optimiser state fp32" if args.get("amp") else "fp32"),
            "optimiser": _optimiser(args),
            "loss": f"{args.get('adv_weight', 1.0)}·BCE adversarial (adversarial phases) + "
            f"{args.get('l1_weight')}·L1 + {args.get('jaccard_weight')}·Jaccard"
            + (f" + {args['bce_weight']}·pixel BCE" if args.get("bce_weight") else "")
            + (f" + {args['lovasz_weight']}·Lovász" if args.get("lovasz_weight") else "")
            + " (last command; see commands)",
            "phases": _phases(args, log),
            "curve": card_curve(log),
            "augmentation": _augmentation(args),
            "weights": (f"exponential moving average of G, decay {args['ema_decay']} per step "
                        "(last phase)" if args.get("ema_decay") else "G's own weights"),
            **({"averaged": {"of": meta["averaged"], "statistics": meta.get("statistics")}}
               if meta.get("averaged") else {}),
            "hardware": hardware or _hardware(run, args),
            "wall_time_hours": round(sum(r["train_seconds"] for r in log) / 3600, 2),
            "commands": _commands(run),
            "initialised_from": _parent(run),
        },
        "evaluation": {
            "data": str(data),
            "n": n_val,
            "metrics": val,
            "protocol": "prediction resized to each mask's resolution, threshold 0.5, "
            "per-image mean",
            "command": f"python -m slsnet.evaluate --data {data} --weights {out}",
            **({"tta": {"metrics": val_tta,
                        "protocol": "the mean of the probabilities of each image and its three "
                        "mirror images, then as above (--tta: 4x the network's time)",
                        "command": f"python -m slsnet.evaluate --data {data} --weights {out} "
                        "--tta"}} if val_tta is not None else {}),
        },
        "limitations": "Trained on ISIC 2017 dermoscopy only; not a medical device; not "
        "validated on other cameras, skin types or video (see --smooth for video).",
        "citations": CITATIONS,
    }


def main(argv: list[str] | None = None) -> int:
    """Export the best generator of a run with its model card."""
    parser = argparse.ArgumentParser(prog="python -m slsnet.card", description=__doc__)
    parser.add_argument("--run", required=True, help="training run folder (with best.pt)")
    parser.add_argument("--from", dest="source", help="the run's file to ship (default: "
                        "best_gan.pt where the run has one, else best.pt)")
    parser.add_argument("--data", required=True, help="validation folder (images/ + masks/)")
    parser.add_argument("--out", default="weights/slsnet_isic2017.pt")
    parser.add_argument("--note", action="append", default=[], help="a remark for the card")
    parser.add_argument("--hardware", help="what the run trained on, where its commands.jsonl "
                        "does not say (e.g. a run copied from another machine)")
    args = parser.parse_args(argv)

    run, data, out = Path(args.run), Path(args.data), Path(args.out)
    try:
        source = pick(run, args.source)
        generator = load_generator(source)
        pairs = find_pairs(data)
    except (FileNotFoundError, ValueError, WeightsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    rgbs, masks = [read_rgb(p.image) for p in pairs], [read_mask(p.mask) for p in pairs]
    val, val_tta = (score_views(generator, rgbs, masks, device=torch.device("cpu"), tta=tta)[0]
                    .mean() for tta in (False, True))
    card = build_card(run, data, out, generator, val, len(pairs), args.hardware, source.name,
                      val_tta)
    card["notes"] = args.note
    save_generator(generator, out, meta={"epoch": card["training"]["best_epoch"], "val": val})
    out.with_suffix(".json").write_text(json.dumps(card, indent=2) + "\n")
    print(json.dumps(card["evaluation"]["metrics"], indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
