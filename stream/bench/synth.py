"""Synthetic dermatoscope sweeps: a still image and its mask become a video with exact truth.

A virtual camera looks at the still (stretched to the clip's aspect, which undoes the square
stretch of the ISIC 256×256 images) with a smooth trajectory of centre, zoom and rotation. Each
frame is rendered with the optics and sensor of a hand-held dermatoscope: motion blur from
sub-frame exposure, slowly wandering defocus, ring-light vignetting, illumination flicker,
colour drift and signal-dependent sensor noise. The mask goes through the same warp (without
the photometric effects), so ``truth[t]`` is the lesion exactly where frame ``t`` shows it.

    python -m stream.synth IMAGE MASK [IMAGE MASK ...] --out clip.mp4 --truth DIR \
        [--seconds 10] [--motion sweep] [--size 640x480] [--fps 30] [--seed 0]

Several image/mask pairs give one clip of consecutive segments (hard cuts between them).
Truth masks are written as ``DIR/frame_%06d.png`` (0/255), numbered like ``Frame.index``.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

from slsnet.geometry import lesion_centre

MOTIONS = ("static", "slow_pan", "fast_pan", "zoom", "rotation", "jitter", "flicker", "sweep")
EXPOSURE = 0.5  # fraction of the frame interval the shutter is open (drives motion blur)


@dataclass(frozen=True)
class Pose:
    """Where the virtual camera looks: canvas coordinates are fractions of the still's (W, H)."""

    cx: float  # view centre, 0..1 across the canvas
    cy: float
    zoom: float  # 1: the whole canvas fills the frame; 2: half of it does
    angle: float  # degrees, counter-clockwise


def _smooth_noise(rng: np.random.Generator, t: np.ndarray, hz: float) -> np.ndarray:
    """Band-limited noise in [-1, 1]: a random sum of sines up to ``hz``, smooth at any rate."""
    out = np.zeros_like(t)
    for _ in range(6):
        f = hz * rng.uniform(0.2, 1.0)
        out += rng.uniform(0.5, 1.0) * np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi))
    return out / max(np.abs(out).max(), 1e-6)


def synthetic_still(
    size_wh: tuple[int, int] = (256, 256), seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """A made-up dermoscopy still for tests: textured skin with an irregular dark lesion.

    Returns:
        (H×W×3 uint8 RGB image, H×W bool lesion mask).
    """
    w, h = size_wh
    rng = np.random.default_rng(seed)
    grain = cv2.GaussianBlur(rng.standard_normal((h, w)).astype(np.float32), (0, 0), 2.0)
    blotch = cv2.GaussianBlur(rng.standard_normal((h, w)).astype(np.float32), (0, 0), 12.0)
    texture = 40 * grain + 300 * blotch  # pores and uneven pigment give the flow something to hold
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    angle = np.arctan2(yy - h / 2, xx - w / 2)
    wobble = 1 + 0.15 * np.sin(3 * angle + rng.uniform(0, 6)) + 0.08 * np.sin(5 * angle)
    radius = np.hypot((xx - w / 2) / (0.22 * w), (yy - h / 2) / (0.18 * h))
    mask = radius < wobble
    skin = np.array([215, 170, 150], np.float32) + texture[..., None] * np.array([1, 0.8, 0.7])
    lesion = np.array([110, 70, 50], np.float32) + 0.6 * texture[..., None]
    img = np.where(mask[..., None], lesion, skin)
    return np.clip(img, 0, 255).astype(np.uint8), mask


def trajectory(motion: str, t: np.ndarray, anchor: tuple[float, float], seed: int) -> list[Pose]:
    """Camera poses at times ``t`` (seconds, may be fractional for sub-frame exposure).

    Args:
        motion: one of ``MOTIONS``.
        t: N times in seconds.
        anchor: lesion centroid (x, y) as canvas fractions; the camera keeps it in view.
        seed: makes hand tremor and drift reproducible.

    Returns:
        N poses.
    """
    if motion not in MOTIONS:
        raise ValueError(f"unknown motion {motion!r}; choose from {', '.join(MOTIONS)}")
    rng = np.random.default_rng(seed)
    ax = 0.5 + 0.6 * (anchor[0] - 0.5)  # lean towards the lesion but not to the canvas edge
    ay = 0.5 + 0.6 * (anchor[1] - 0.5)
    ph = rng.uniform(0, 2 * np.pi, size=4)
    zero = np.zeros_like(t)
    cx, cy, zoom, angle = ax + zero, ay + zero, 1.2 + zero, zero.copy()
    if motion == "slow_pan":  # ~2 px/frame at 640 wide
        zoom = 1.4 + zero
        cx = ax + 0.12 * np.sin(2 * np.pi * t / 8.0 + ph[0])
        cy = ay + 0.08 * np.sin(2 * np.pi * t / 11.0 + ph[1])
    elif motion == "fast_pan":  # ~20 px/frame: a quick sweep back and forth
        zoom = 1.5 + zero
        cx = ax + 0.16 * np.sin(2 * np.pi * t / 1.6 + ph[0])
        cy = ay + 0.07 * np.sin(2 * np.pi * t / 2.3 + ph[1])
    elif motion == "zoom":  # 1× ↔ 2.2× every 4 s
        zoom = 2.2 ** (0.5 * (1 - np.cos(2 * np.pi * t / 4.0 + ph[0])))
    elif motion == "rotation":  # ±25° every 4 s
        zoom = 1.5 + zero
        angle = 25.0 * np.sin(2 * np.pi * t / 4.0 + ph[0])
    elif motion in ("jitter", "sweep"):
        # Physiological hand tremor (8–12 Hz, a few pixels) on a slow drift.
        tremor = np.stack([_smooth_noise(rng, t, 11.0) for _ in range(4)])
        drift = np.stack([_smooth_noise(rng, t, 0.4) for _ in range(3)])
        zoom = 1.3 * (1 + 0.01 * tremor[2]) + 0.05 * drift[2]
        cx = ax + 0.006 * tremor[0] + 0.02 * drift[0]
        cy = ay + 0.006 * tremor[1] + 0.02 * drift[1]
        angle = 0.7 * tremor[3]
        if motion == "sweep":  # a clinician's look-around: pan, zoom in, turn the scope
            cx = cx + 0.10 * np.sin(2 * np.pi * t / 5.0 + ph[0])
            cy = cy + 0.06 * np.sin(2 * np.pi * t / 7.0 + ph[1])
            zoom = zoom * (1 + 0.35 * 0.5 * (1 - np.cos(2 * np.pi * t / 6.0 + ph[2])))
            angle = angle + 12.0 * np.sin(2 * np.pi * t / 9.0 + ph[3])
    elif motion == "flicker":  # the camera barely moves; the light does the damage
        drift = np.stack([_smooth_noise(rng, t, 0.3) for _ in range(2)])
        cx, cy = ax + 0.01 * drift[0], ay + 0.01 * drift[1]
    # Keep most of the view on the canvas (reflected borders fill what little is left).
    half = 0.5 / np.maximum(zoom, 1.0)
    cx = np.clip(cx, half, 1 - half)
    cy = np.clip(cy, half, 1 - half)
    return [
        Pose(float(a), float(b), float(z), float(r))
        for a, b, z, r in zip(cx, cy, zoom, angle, strict=True)
    ]


def view_matrix(pose: Pose, still_wh: tuple[int, int], size_wh: tuple[int, int]) -> np.ndarray:
    """2×3 affine from output pixel (x, y) to still pixel, for ``cv2.WARP_INVERSE_MAP``."""
    (sw, sh), (w, h) = still_wh, size_wh
    a = math.radians(pose.angle)
    rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]]) / pose.zoom
    # output → canvas (the still stretched to W×H, so rotation is in true proportions) → still
    lin = np.diag([sw / w, sh / h]) @ rot
    centre_out = np.array([w / 2, h / 2])
    centre_still = np.array([pose.cx * sw, pose.cy * sh])
    return np.hstack([lin, (centre_still - lin @ centre_out)[:, None]])


def _warp(img: np.ndarray, m: np.ndarray, size_wh: tuple[int, int]) -> np.ndarray:
    return cv2.warpAffine(
        img,
        m,
        size_wh,
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_REFLECT_101,
    )


class Optics:
    """Photometric model of the scope for one segment: vignette, light, focus, sensor."""

    def __init__(self, size_wh: tuple[int, int], n: int, fps: float, *, flicker: bool, seed: int):
        w, h = size_wh
        rng = np.random.default_rng(seed + 1)
        self.rng = rng
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        r2 = ((xx - w / 2) ** 2 + (yy - h / 2) ** 2) / ((w / 2) ** 2 + (h / 2) ** 2)
        self.vignette = (1.0 - 0.28 * r2)[..., None]  # ring light falls off toward the corners
        t = np.arange(n) / fps
        if flicker:  # LED driver beating against the shutter, plus brown-outs
            beat = np.sign(np.sin(2 * np.pi * 2.7 * t)) * np.abs(np.sin(2 * np.pi * 0.9 * t))
            gain = 1 + 0.14 * beat
            gain += 0.05 * rng.standard_normal(n)
            dips = rng.random(n) < 0.05
            gain[dips] *= rng.uniform(0.6, 0.8, size=int(dips.sum()))
        else:
            gain = 1 + 0.02 * rng.standard_normal(n) + 0.03 * _smooth_noise(rng, t, 0.5)
        self.gain = gain.astype(np.float32)
        tint = 0.03 * np.stack([_smooth_noise(rng, t, 0.2) for _ in range(3)], axis=1)
        self.tint = (1 + tint).astype(np.float32)  # per-channel colour drift
        focus = 0.5 + 0.5 * _smooth_noise(rng, t, 0.3)
        self.defocus = (0.4 + 0.9 * focus**3).astype(np.float32)  # Gaussian sigma in pixels

    def __call__(self, rgb: np.ndarray, i: int) -> np.ndarray:
        """Light, focus and sensor for frame ``i``: H×W×3 float32 RGB → uint8 BGR."""
        img = cv2.GaussianBlur(rgb, (0, 0), float(self.defocus[i]))
        img = img * (self.vignette * self.gain[i] * self.tint[i])
        # Shot noise grows with the signal; read noise does not.
        sigma = np.sqrt(2.0**2 + 0.04 * np.clip(img, 0, None))
        img = img + sigma * self.rng.standard_normal(img.shape, dtype=np.float32)
        return cv2.cvtColor(np.clip(img, 0, 255).astype(np.uint8), cv2.COLOR_RGB2BGR)


def _lesion_mask(mask: np.ndarray, still_hw: tuple[int, int]) -> np.ndarray:
    """``mask`` as an H×W bool array the size of the still (0/1 or 0/255 input)."""
    m = np.asarray(mask) > (127 if np.asarray(mask).dtype == np.uint8 and mask.max() > 1 else 0)
    sh, sw = still_hw
    if m.shape != (sh, sw):
        m = cv2.resize(m.astype(np.uint8), (sw, sh), interpolation=cv2.INTER_NEAREST) > 0
    return m


def _exposure_poses(m: np.ndarray, motion: str, fps: float, seconds: float,
                    seed: int) -> list[list[Pose]]:
    """Per frame, the camera poses over its exposure (odd count; the middle one is the frame's)."""
    n = max(1, round(seconds * fps))
    sh, sw = m.shape
    centre = lesion_centre(m)  # (row, column)
    anchor = (centre[1] / sw, centre[0] / sh) if centre is not None else (0.5, 0.5)
    # Sub-frame times spanning the exposure of each frame, for motion blur.
    sub = np.linspace(-EXPOSURE / 2, EXPOSURE / 2, 9)
    times = (np.arange(n)[:, None] + sub[None, :]) / fps
    poses = trajectory(motion, times.ravel(), anchor, seed)
    return [poses[i * len(sub) : (i + 1) * len(sub)] for i in range(n)]


def sweep_views(
    image_rgb: np.ndarray,
    mask: np.ndarray,
    *,
    motion: str = "sweep",
    size_wh: tuple[int, int] = (640, 480),
    fps: float = 30.0,
    seconds: float = 10.0,
    seed: int = 0,
) -> list[np.ndarray]:
    """The view of each frame of :func:`sweep` (same arguments), as :func:`view_matrix` gives it.

    With them, a mask of frame ``t − 1`` can be moved to where frame ``t`` sees the same skin
    (:func:`stream.bench.temporal_metrics.frame_steps`): what changes beyond that is not motion.
    """
    m = _lesion_mask(mask, image_rgb.shape[:2])
    still_wh = (image_rgb.shape[1], image_rgb.shape[0])
    return [view_matrix(row[len(row) // 2], still_wh, size_wh)
            for row in _exposure_poses(m, motion, fps, seconds, seed)]


def sweep(
    image_rgb: np.ndarray,
    mask: np.ndarray,
    *,
    motion: str = "sweep",
    size_wh: tuple[int, int] = (640, 480),
    fps: float = 30.0,
    seconds: float = 10.0,
    seed: int = 0,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Render a sweep over one still.

    Args:
        image_rgb: H×W×3 uint8 RGB still.
        mask: H×W lesion mask (bool or 0/1 or 0/255); resized to the image if it differs.
        motion: camera motion, one of ``MOTIONS``.
        size_wh: (W, H) of the output frames.
        fps: frame rate (sets the speed of every motion in pixels per frame).
        seconds: clip length.
        seed: reproducible tremor, flicker and noise.

    Yields:
        (frame, truth): H×W×3 uint8 BGR and H×W uint8 {0, 1}, one pair per frame.
    """
    sh, sw = image_rgb.shape[:2]
    m = _lesion_mask(mask, (sh, sw))
    rows = _exposure_poses(m, motion, fps, seconds, seed)
    optics = Optics(size_wh, len(rows), fps, flicker=motion == "flicker", seed=seed)
    still = image_rgb.astype(np.float32)
    truth_src = m.astype(np.float32)
    w, h = size_wh
    for i, row in enumerate(rows):
        mid = view_matrix(row[len(row) // 2], (sw, sh), size_wh)
        # As many exposure samples as the image moves in pixels (1 when it is still).
        corners = np.array([[0, 0, 1], [w, 0, 1], [0, h, 1], [w, h, 1]], np.float64).T
        first, last = (
            view_matrix(row[0], (sw, sh), size_wh),
            view_matrix(row[-1], (sw, sh), size_wh),
        )
        travel = np.abs((last - first) @ corners).max() * max(w / sw, h / sh) * row[0].zoom
        k = int(np.clip(math.ceil(travel), 1, len(row)))
        picks = [row[j] for j in np.linspace(0, len(row) - 1, k).round().astype(int)]
        rgb = sum(_warp(still, view_matrix(p, (sw, sh), size_wh), size_wh) for p in picks) / k
        truth = (_warp(truth_src, mid, size_wh) >= 0.5).astype(np.uint8)
        yield optics(rgb, i), truth


def write_clip(
    frames: Iterator[tuple[np.ndarray, np.ndarray]],
    out: str | Path,
    truth_dir: str | Path | None,
    *,
    fps: float,
    crf: int = 26,
) -> int:
    """Encode BGR frames to an H.264 file (PyAV) and their truths to ``truth_dir``; returns N."""
    out, count = Path(out), 0
    if truth_dir is not None:
        Path(truth_dir).mkdir(parents=True, exist_ok=True)
    rate = Fraction(fps).limit_denominator(1001)
    with av.open(str(out), "w") as container:
        stream = None
        for frame, truth in frames:
            if stream is None:
                stream = container.add_stream("libx264", rate=rate)
                stream.width, stream.height = frame.shape[1], frame.shape[0]
                stream.pix_fmt = "yuv420p"
                stream.options = {"crf": str(crf), "preset": "medium"}
            video = av.VideoFrame.from_ndarray(frame, format="bgr24")
            container.mux(stream.encode(video))
            if truth_dir is not None:
                cv2.imwrite(str(Path(truth_dir) / f"frame_{count:06d}.png"), truth * 255)
            count += 1
        if stream is not None:
            container.mux(stream.encode(None))
    return count


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like 640x480, got {text!r}") from None
    if w < 16 or h < 16 or w % 2 or h % 2:
        raise argparse.ArgumentTypeError(f"size must be even and at least 16x16, got {text!r}")
    return w, h


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m stream.synth", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "pairs",
        nargs="+",
        metavar="IMAGE MASK",
        help="still image and its lesion mask (repeatable)",
    )
    p.add_argument("--out", required=True, help="output video (.mp4, H.264)")
    p.add_argument("--truth", required=True, help="folder for the per-frame truth masks")
    p.add_argument("--seconds", type=float, default=10.0, help="total length (split between pairs)")
    p.add_argument("--motion", choices=MOTIONS, default="sweep")
    p.add_argument("--size", type=_size, default=(640, 480), metavar="WxH")
    p.add_argument("--fps", type=float, default=30.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--crf", type=int, default=26, help="x264 quality (lower: bigger, better)")
    return p


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    if len(args.pairs) % 2:
        parser.error("give images and masks in pairs: IMAGE MASK [IMAGE MASK ...]")
    if not (args.fps > 0 and args.seconds > 0):
        parser.error("--fps and --seconds must be positive")
    stills = []
    for image_path, mask_path in zip(args.pairs[::2], args.pairs[1::2], strict=True):
        bgr = cv2.imread(image_path, cv2.IMREAD_COLOR)
        mask = cv2.imread(mask_path, cv2.IMREAD_GRAYSCALE)
        if bgr is None or mask is None:
            bad = image_path if bgr is None else mask_path
            print(f"error: cannot read image {bad}", file=sys.stderr)
            return 2
        stills.append((cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), mask > 127))
    if not Path(args.out).parent.is_dir():
        print(f"error: output folder {Path(args.out).parent} does not exist", file=sys.stderr)
        return 2
    seconds = args.seconds / len(stills)

    def frames() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for k, (rgb, mask) in enumerate(stills):
            yield from sweep(
                rgb,
                mask,
                motion=args.motion,
                size_wh=args.size,
                fps=args.fps,
                seconds=seconds,
                seed=args.seed + 101 * k,
            )

    n = write_clip(frames(), args.out, args.truth, fps=args.fps, crf=args.crf)
    size_kb = Path(args.out).stat().st_size / 1024
    print(
        f"wrote {args.out}: {n} frames {args.size[0]}x{args.size[1]} @ {args.fps:g} fps, "
        f"{size_kb:.0f} KiB; truth in {args.truth}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
