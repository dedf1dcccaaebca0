"""Saving and loading generator weights: a small, versioned, ``weights_only``-safe file format.

A weights file is ``torch.save`` of ``{"format", "version", "config", "state_dict", "meta"}``.
Next to a shipped file lies a JSON model card of the same stem (``slsnet_isic2017.json``).

The shipped weights live in the repository's ``weights/`` folder; a wheel carries them (and the
card) as package data in ``slsnet/weights/`` (``setup.py`` copies them at build time), so that
:func:`shipped_weights` finds them in an installed package whatever the working directory, and
in a source checkout or an editable install too.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import torch

from slsnet.config import SLSNetConfig
from slsnet.generator import Generator, build_generator

FORMAT = "slsnet-generator"
VERSION = 1
SHIPPED_NAME = "slsnet_isic2017.pt"  # its card: the same stem, .json


class WeightsError(ValueError):
    """A weights file that is missing, corrupt, or not an SLSNet generator of this shape."""


def save_generator(generator: Generator, path: str | Path, *, meta: dict | None = None) -> Path:
    """Write the generator's weights and config (atomically: a temp file, then a rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().clone() for k, v in generator.state_dict().items()}
    blob = {
        "format": FORMAT,
        "version": VERSION,
        "config": generator.config.to_dict(),
        "state_dict": state,
        "meta": meta or {},
    }
    tmp = path.with_name(path.name + ".tmp")
    torch.save(blob, tmp)
    tmp.replace(path)
    return path


def shipped_weights() -> Path | None:
    """The trained weights that come with the package, or None where they are absent.

    An installed wheel: ``slsnet/weights/`` inside the package (``importlib.resources``). A
    source checkout or an editable install: ``weights/`` beside the ``slsnet`` folder.
    """
    packaged = resources.files("slsnet").joinpath("weights", SHIPPED_NAME)
    if isinstance(packaged, Path) and packaged.is_file():  # installed wheels are plain folders
        return packaged
    checkout = Path(__file__).resolve().parents[1] / "weights" / SHIPPED_NAME
    return checkout if checkout.is_file() else None


def read_card(path: str | Path) -> dict:
    """The JSON model card beside a weights file, or ``{}`` if there is none."""
    card = Path(path).with_suffix(".json")
    if not card.is_file():
        return {}
    try:
        return json.loads(card.read_text())
    except json.JSONDecodeError as exc:
        raise WeightsError(f"model card {card} is not valid JSON: {exc}") from None


def load_generator(
    path: str | Path | None = None, *, device: str | torch.device = "cpu"
) -> Generator:
    """Load a generator saved by :func:`save_generator` in eval mode on ``device``.

    A training checkpoint (a run's ``last.pt``) loads too, as the network its last epoch left:
    the moving average of G where the run kept one, else G, with the running BatchNorm
    statistics of training rather than statistics measured afresh (what its epochs were
    scored and saved with); its ``meta`` says so.

    Args:
        path: the weights file; None: the shipped weights (:func:`shipped_weights`).

    Raises:
        WeightsError: with a one-line reason when the file is missing, truncated or corrupt,
            of another format, or its tensors do not fit the architecture in its config.
    """
    if path is None:
        path = shipped_weights()
        if path is None:
            raise WeightsError(f"no shipped weights ({SHIPPED_NAME}) in this installation; "
                               "pass a weights file")
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file not found: {path}")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a damaged zip/pickle
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise WeightsError(
            f"cannot read weights {path} (truncated or corrupt?): {reason}"
        ) from None
    if isinstance(blob, dict) and "trainer" in blob and "format" not in blob:
        return _from_training_state(blob, path).to(device).eval()
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise WeightsError(f"{path} is not an SLSNet generator weights file")
    if blob.get("version") != VERSION:
        raise WeightsError(f"{path} has format version {blob.get('version')}, expected {VERSION}")
    try:
        config = SLSNetConfig.from_dict(blob["config"])
        generator = build_generator(config=config)
        generator.load_state_dict(blob["state_dict"], strict=True)
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0]
        raise WeightsError(f"{path} does not match the SLSNet architecture: {first}") from None
    card = read_card(path)
    if card and card.get("config") and SLSNetConfig.from_dict(card["config"]) != config:
        raise WeightsError(f"model card {path.with_suffix('.json')} describes another config")
    generator.meta = blob.get("meta", {})
    return generator.to(device).eval()


def _from_training_state(blob: dict, path: Path) -> Generator:
    """The generator of a checkpoint written by ``slsnet.train`` (see :func:`load_generator`)."""
    trainer = blob["trainer"]
    averaged = "ema" in trainer
    prefix = "module."  # torch.optim.swa_utils.AveragedModel's keys; it adds n_averaged
    state = ({k[len(prefix):]: v for k, v in trainer["ema"].items() if k.startswith(prefix)}
             if averaged else trainer.get("generator"))
    try:
        generator = build_generator(config=SLSNetConfig.from_dict(blob["config"]))
        generator.load_state_dict(state, strict=True)
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0]
        raise WeightsError(f"{path} is not a training checkpoint of this architecture: "
                           f"{first}") from None
    generator.meta = {"epoch": blob.get("epoch"), "statistics": "running",
                      "weights": "moving average" if averaged else "G"}
    return generator
