"""Small real training runs on a few ISIC 2017 images, shared by the training and tool tests.

The fixtures that use these (``tiny_isic``, ``trained_run``) are in ``conftest.py``.
"""

import json
import os
import shutil
from pathlib import Path

from slsnet.train import main as train_main

# The ISIC 2017 copy beside the repository (../shared/data/isic2017), or $SLSNET_DATA.
ISIC = Path(os.environ.get("SLSNET_DATA",
                           Path(__file__).resolve().parents[3] / "shared" / "data" / "isic2017"))


def copy_split(src: Path, dst: Path, n: int) -> None:
    """The first ``n`` image/mask pairs of an ISIC split, in a folder of the same layout."""
    (dst / "images").mkdir(parents=True)
    (dst / "masks").mkdir(parents=True)
    for image in sorted((src / "images").iterdir())[:n]:
        shutil.copy(image, dst / "images")
        shutil.copy(src / "masks" / f"{image.stem}_segmentation.png", dst / "masks")


def train(data: Path, out: Path, *extra: str) -> int:
    """``python -m slsnet.train`` at 64×64, batch 2, on the CPU; returns its exit status."""
    return train_main(
        ["--data", str(data), "--out", str(out), "--size", "64", "--batch-size", "2",
         "--device", "cpu", *extra]
    )


def read_log(out: Path) -> list[dict]:
    """The run's ``log.jsonl``, one dict per epoch."""
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
