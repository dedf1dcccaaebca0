"""Data: pairing images with masks, loading them at the network size, and online augmentation.

Layout: ``DIR/images/*`` and ``DIR/masks/*`` (jpg, png or bmp). A mask belongs to the image whose
file-name stem it starts with: ``ISIC_0000000_segmentation.png`` → ``ISIC_0000000.jpg``,
``IMD002_lesion.bmp`` → ``IMD002.bmp``, or simply the same stem.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from slsnet.config import INPUT_MEAN, INPUT_STD
from slsnet.geometry import lesion_centre

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")
GAMMAS = (0.5, 1.0, 1.5)  # paper §4.3
CLAHE_CLIP = (1.0, 2.0)


@dataclass(frozen=True)
class Pair:
    """One image file and its ground-truth mask file."""

    image: Path
    mask: Path


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def find_pairs(root: str | Path) -> list[Pair]:
    """Pair ``root/images`` with ``root/masks`` by file-name stem prefix.

    Raises:
        FileNotFoundError: a folder is missing.
        ValueError: no pairs, or an image has no mask (a mask without image is ignored).
    """
    root = Path(root)
    for sub in ("images", "masks"):
        if not (root / sub).is_dir():
            raise FileNotFoundError(
                f"{root / sub} is not a folder (expected DIR/images, DIR/masks)"
            )
    images = {p.stem: p for p in _files(root / "images")}
    by_image: dict[str, Path] = {}
    for mask in _files(root / "masks"):
        stem = mask.stem
        cuts = [i for i, ch in enumerate(stem) if ch in "_-. "] + [len(stem)]
        for cut in reversed(cuts):  # the longest image stem that prefixes the mask stem wins
            if stem[:cut] in images:
                by_image.setdefault(stem[:cut], mask)
                break
    missing = sorted(set(images) - set(by_image))
    if missing:
        raise ValueError(
            f"{len(missing)} image(s) in {root / 'images'} have no mask, e.g. {missing[0]}"
        )
    if not images:
        raise ValueError(f"no images in {root / 'images'}")
    return [Pair(images[s], by_image[s]) for s in sorted(images)]


def read_rgb(path: str | Path) -> np.ndarray:
    """Read an image file as H×W×3 uint8 RGB."""
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError(f"cannot read image {path}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def read_mask(path: str | Path) -> np.ndarray:
    """Read a mask file as H×W bool (any non-zero pixel is lesion)."""
    m = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if m is None:
        raise ValueError(f"cannot read mask {path}")
    return m > 127


def load_arrays(pairs: list[Pair], size: int) -> tuple[np.ndarray, np.ndarray]:
    """Images stretch-resized to N×size×size×3 uint8 RGB, masks to N×size×size uint8 0/1.

    Images go through :func:`resize_to_input`, the resize inference uses, so an image smaller
    than ``size`` is enlarged the same way in training as in use.
    """
    images = np.empty((len(pairs), size, size, 3), np.uint8)
    masks = np.empty((len(pairs), size, size), np.uint8)
    for i, pair in enumerate(pairs):
        images[i] = resize_to_input(read_rgb(pair.image), size)
        m = read_mask(pair.mask).astype(np.uint8)
        masks[i] = cv2.resize(m, (size, size), interpolation=cv2.INTER_NEAREST)
    return images, masks


def resize_to_input(rgb: np.ndarray, size: int) -> np.ndarray:
    """Stretch-resize H×W(×C) uint8 to size×size: area filter when shrinking, bilinear else."""
    h, w = rgb.shape[:2]
    interp = cv2.INTER_AREA if (h >= size and w >= size) else cv2.INTER_LINEAR
    return cv2.resize(rgb, (size, size), interpolation=interp)


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """N×H×W×3 uint8 RGB → N×3×H×W float32 normalised as the network expects."""
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float()
    return (x / 255.0 - INPUT_MEAN) / INPUT_STD


def augment(
    image: np.ndarray, mask: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Online augmentation of the paper: h/v flips, gamma 0.5/1.0/1.5, CLAHE clip 1–2.

    Args:
        image: H×W×3 uint8 RGB. mask: H×W uint8. rng: the only source of randomness.
    """
    if rng.random() < 0.5:
        image, mask = image[:, ::-1], mask[:, ::-1]
    if rng.random() < 0.5:
        image, mask = image[::-1], mask[::-1]
    gamma = GAMMAS[rng.integers(len(GAMMAS))]
    if gamma != 1.0:
        lut = (255.0 * (np.arange(256) / 255.0) ** gamma).round().astype(np.uint8)
        image = lut[image]
    if rng.random() < 0.5:
        clip = float(rng.uniform(*CLAHE_CLIP))
        lab = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2LAB)
        lab[..., 0] = cv2.createCLAHE(clipLimit=clip, tileGridSize=(8, 8)).apply(lab[..., 0])
        image = cv2.cvtColor(lab, cv2.COLOR_LAB2RGB)
    return np.ascontiguousarray(image), np.ascontiguousarray(mask)


HUE_SHIFT = 8  # OpenCV hue units (2° each): ±16°
SATURATION = (0.75, 1.25)  # scale range of the saturation
BRIGHTNESS = (0.8, 1.2)  # scale range of the value channel


def jitter_colour(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Hue turned by up to ±16°, saturation and brightness scaled (RGB uint8 in and out).

    Dermatoscopes differ in white balance, polarisation and light; the paper's gamma and CLAHE
    change brightness and contrast but never the colour itself.
    """
    hsv = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2HSV).astype(np.float32)
    hsv[..., 0] = (hsv[..., 0] + rng.uniform(-HUE_SHIFT, HUE_SHIFT)) % 180
    hsv[..., 1] *= rng.uniform(*SATURATION)
    hsv[..., 2] *= rng.uniform(*BRIGHTNESS)
    hsv = np.clip(hsv, 0, 255).round().astype(np.uint8)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)


def zoom_crop(
    image: np.ndarray,
    mask: np.ndarray,
    rng: np.random.Generator,
    max_zoom: float,
    *,
    aim: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """A random square window of 1/z of the image's side, z uniform in [1, ``max_zoom``].

    The window lies anywhere inside the image, so the lesion may fill it or run over its edges:
    the framing of a dermatoscope held close, which whole-image training never shows. With
    ``aim`` the window holds the lesion's centre (where there is a lesion), as a scope held
    close over a lesion does: at high zoom the lesion then fills most of the view.
    """
    h, w = mask.shape
    zoom = float(rng.uniform(1.0, max_zoom))
    ch, cw = max(1, round(h / zoom)), max(1, round(w / zoom))
    centre = lesion_centre(mask) if aim else None
    if centre is not None:
        cy, cx = int(centre[0]), int(centre[1])
        y = int(rng.integers(max(0, cy - ch + 1), min(h - ch, cy) + 1))
        x = int(rng.integers(max(0, cx - cw + 1), min(w - cw, cx) + 1))
    else:
        y, x = int(rng.integers(h - ch + 1)), int(rng.integers(w - cw + 1))
    return image[y : y + ch, x : x + cw], mask[y : y + ch, x : x + cw]


def rotate(
    image: np.ndarray, mask: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Image and mask turned by one random angle about their centre, borders mirrored.

    A dermatoscope has no "up": the same lesion comes at any angle. Flips give only the four
    right-angle views; this gives the rest. Mirrored borders keep the corners skin-like
    instead of black, which the network would learn to read as the scope's field stop.
    """
    h, w = mask.shape
    m = cv2.getRotationMatrix2D((w / 2 - 0.5, h / 2 - 0.5), float(rng.uniform(0, 360)), 1.0)
    turned = cv2.warpAffine(image, m, (w, h), flags=cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_REFLECT_101)
    return turned, cv2.warpAffine(mask, m, (w, h), flags=cv2.INTER_NEAREST,
                                  borderMode=cv2.BORDER_REFLECT_101)


def fit(image: np.ndarray, mask: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Image and mask resized to size×size (area-averaged down, bilinear up; mask nearest)."""
    if image.shape[:2] == (size, size):
        return image, mask
    return resize_to_input(image, size), cv2.resize(mask, (size, size),
                                                    interpolation=cv2.INTER_NEAREST)


def window(
    image: np.ndarray, mask: np.ndarray, size: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """A random size×size window of image and mask (uniform over the positions that fit)."""
    h, w = mask.shape
    y, x = int(rng.integers(h - size + 1)), int(rng.integers(w - size + 1))
    return image[y : y + size, x : x + size], mask[y : y + size, x : x + size]


class Batches:
    """Shuffled, augmented mini-batches from in-memory arrays, driven by one numpy Generator.

    The generator's state is part of a training checkpoint, so a resumed run draws exactly the
    batches and augmentations the uninterrupted run would have drawn.

    Args:
        images, masks: N×H×W×3 and N×H×W arrays, at ``size`` or larger (zoom crops keep more
            detail when the arrays are larger than the network input).
        size: the network input; ``None``: the arrays' own size.
        zoom: probability in [0, 1] of a :func:`zoom_crop` before the paper's augmentation
            (0: never, and no random draw for it, so runs without it draw as before).
        max_zoom: the largest zoom of a crop (≥ 1).
        aim: zoom crops hold the lesion's centre (see :func:`zoom_crop`).
        turn: probability in [0, 1] of a :func:`rotate` by a random angle (0: never, and no
            random draw for it).
        colour: probability in [0, 1] of a :func:`jitter_colour` after the paper's augmentation
            (0: never, and no random draw for it).
        view: the size the network runs at; when it is larger than ``size``, a sample is a
            random ``size``×``size`` window of the image as the network sees it at ``view``
            (the lesion keeps its scale in pixels) instead of the whole image shrunk.
            ``None``: the whole image at ``size``.
    """

    def __init__(
        self,
        images: np.ndarray,
        masks: np.ndarray,
        batch_size: int,
        rng: np.random.Generator,
        *,
        size: int | None = None,
        zoom: float = 0.0,
        max_zoom: float = 2.0,
        aim: bool = False,
        turn: float = 0.0,
        colour: float = 0.0,
        view: int | None = None,
    ):
        self.images, self.masks = images, masks
        self.batch_size = batch_size
        self.rng = rng
        self.size = size or images.shape[1]
        self.zoom, self.max_zoom, self.aim, self.turn = zoom, max_zoom, aim, turn
        self.colour, self.view = colour, view

    def _sample(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        image, mask = self.images[i], self.masks[i]
        if self.zoom > 0 and self.rng.random() < self.zoom:
            image, mask = zoom_crop(image, mask, self.rng, self.max_zoom, aim=self.aim)
        if self.turn > 0 and self.rng.random() < self.turn:
            image, mask = rotate(image, mask, self.rng)
        if self.view and self.view > self.size:
            image, mask = augment(*window(*fit(image, mask, self.view), self.size, self.rng),
                                  self.rng)
        else:
            image, mask = augment(*fit(image, mask, self.size), self.rng)
        if self.colour > 0 and self.rng.random() < self.colour:
            image = jitter_colour(image, self.rng)
        return image, mask

    def __len__(self) -> int:
        return (len(self.images) + self.batch_size - 1) // self.batch_size

    def __iter__(self):
        order = self.rng.permutation(len(self.images))
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            pairs = [self._sample(i) for i in idx]
            x = to_tensor(np.stack([p[0] for p in pairs]))
            y = torch.from_numpy(np.stack([p[1] for p in pairs])).float()[:, None]
            yield x, y
