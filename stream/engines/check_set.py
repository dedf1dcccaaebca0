"""The bundled images a fast CPU engine candidate is calibrated and checked on.

``stream/assets/engine_check.jpg`` is a mosaic of 128×128 tiles, each an ISIC 2017 image
stretch-resized to the network's input as training does: the first :data:`CALIBRATION_ROWS`
rows are training images (an int8 candidate's activation ranges are calibrated on them), the
next :data:`CHECK_ROWS` rows are validation images that no calibration saw (a candidate's masks
must agree with the fp32 engine's on them). Shipping them lets a laptop without the data set
build and check a candidate on its first start.

``python -m stream.engines.check_set --data ../shared/data/isic2017 --out
stream/assets/engine_check.jpg`` makes the mosaic (stream/assets/README.md names the images).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

from slsnet.data import read_rgb, resize_to_input, to_tensor

CHECK_SET = Path(__file__).resolve().parents[1] / "assets" / "engine_check.jpg"
TILE = 128  # the shipped network's input size; tiles align with JPEG's 16-pixel blocks
COLUMNS = 8
CALIBRATION_ROWS = 2  # 16 training images
CHECK_ROWS = 2  # 16 validation images
SAMPLE_CLIP_IDS = ("ISIC_0003582", "ISIC_0007344", "ISIC_0012206")  # in sample.mp4: left out
JPEG_QUALITY = 92


def load_check_set(size: int, path: str | Path = CHECK_SET
                   ) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The calibration and check inputs, each a 1×3×S×S float32 network input.

    Args:
        size: the network's input size S (tiles are resized when it is not :data:`TILE`).
        path: the mosaic.

    Raises:
        FileNotFoundError: the mosaic is missing or unreadable.
    """
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    rows = CALIBRATION_ROWS + CHECK_ROWS
    if bgr is None or bgr.shape[:2] != (rows * TILE, COLUMNS * TILE):
        raise FileNotFoundError(f"the engine check images are missing or damaged: {path}")
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    tiles = [rgb[r * TILE:(r + 1) * TILE, c * TILE:(c + 1) * TILE]
             for r in range(rows) for c in range(COLUMNS)]
    inputs = [to_tensor(resize_to_input(t, size)[None]).numpy() for t in tiles]
    split = CALIBRATION_ROWS * COLUMNS
    return inputs[:split], inputs[split:]


def spread(folder: Path, n: int) -> list[Path]:
    """``n`` images spread evenly over the sorted images of ``folder``, sample clip's left out."""
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png")
                   and p.stem not in SAMPLE_CLIP_IDS)
    if len(files) < n:
        raise FileNotFoundError(f"{folder} holds {len(files)} images, {n} are needed")
    return [files[i * len(files) // n] for i in range(n)]


def make_mosaic(train: list[Path], val: list[Path]) -> np.ndarray:
    """The mosaic (H×W×3 uint8 RGB) of the given training and validation images, in order."""
    tiles = [resize_to_input(read_rgb(p), TILE) for p in [*train, *val]]
    rows = [np.concatenate(tiles[i:i + COLUMNS], axis=1) for i in range(0, len(tiles), COLUMNS)]
    return np.concatenate(rows, axis=0)


def main(argv: list[str] | None = None) -> int:
    """Write the mosaic from an ISIC 2017 copy; one error line and exit 2 on a bad input."""
    parser = argparse.ArgumentParser(prog="python -m stream.engines.check_set",
                                     description="Make the engine check images' mosaic.")
    parser.add_argument("--data", required=True, help="ISIC 2017 folder with train/ and val/")
    parser.add_argument("--out", default=str(CHECK_SET), help="the JPEG to write")
    args = parser.parse_args(argv)
    data = Path(args.data)
    try:
        train = spread(data / "train" / "images", CALIBRATION_ROWS * COLUMNS)
        val = spread(data / "val" / "images", CHECK_ROWS * COLUMNS)
        mosaic = make_mosaic(train, val)
    except (FileNotFoundError, NotADirectoryError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    bgr = cv2.cvtColor(mosaic, cv2.COLOR_RGB2BGR)
    if not cv2.imwrite(args.out, bgr, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY]):
        print(f"error: cannot write {args.out}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}: calibration {', '.join(p.stem for p in train)}; "
          f"check {', '.join(p.stem for p in val)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
