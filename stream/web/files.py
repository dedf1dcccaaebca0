"""The web demo's upload tabs: a still photo, and a recording run through the file pipeline.

Uploads are checked before any work starts (nothing uploaded, empty, too large, not an image
or video, corrupt); each problem is a :class:`UploadError` whose one-line message the page
shows. Results are written into a per-job folder under :class:`JobDirs`, which removes jobs
older than its ``max_age_s`` whenever a new job starts, and everything when the server stops.
"""

from __future__ import annotations

import csv
import shutil
import tempfile
import threading
import time
import uuid
import zipfile
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np

from stream.assembly import (
    Outputs,
    RunConfig,
    build_pipeline,
    build_segmenter,
    open_input,
    open_outputs,
)
from stream.engines import NET_STAGES
from stream.errors import StreamError, UploadError
from stream.frame import Frame
from stream.outputs import Renderer, mask_255
from stream.web.access import ANONYMOUS, safe_stem

MAX_IMAGE_PIXELS = 50_000_000  # a 7k×7k photo; larger ones are rejected before decoding
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


class JobDirs:
    """Per-job result folders, one folder per visitor, under one private root.

    Args:
        root: the folder to use (the web server puts it inside Gradio's cache, so that results
            are served where they are written); None: a new private temporary folder.
        max_age_s: a job folder older than this is removed when the next job starts (the page
            has shown or downloaded its results by then).
    """

    def __init__(self, root: Path | None = None, *, max_age_s: float = 600.0) -> None:
        if root is None:
            root = Path(tempfile.mkdtemp(prefix="slsnet-web-"))
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.max_age_s = max_age_s
        self._lock = threading.Lock()

    def new(self, kind: str, owner: str = ANONYMOUS) -> Path:
        """A fresh empty folder for one job of visitor ``owner``; prunes old jobs first."""
        self.prune()
        path = self.root / owner / f"{kind}-{time.strftime('%H%M%S')}-{uuid.uuid4().hex[:8]}"
        path.mkdir(parents=True)
        return path

    def prune(self, max_age_s: float | None = None) -> int:
        """Remove job folders older than ``max_age_s`` (default: the configured age)."""
        limit = self.max_age_s if max_age_s is None else max_age_s
        now, removed = time.time(), 0
        with self._lock:
            for job in self.root.glob("*/*") if self.root.exists() else ():
                try:
                    old = now - job.stat().st_mtime >= limit
                except FileNotFoundError:  # its visitor's last page just closed
                    continue
                if old:
                    shutil.rmtree(job, ignore_errors=True)
                    removed += 1
        return removed

    def close(self) -> None:
        """Remove the root and every job in it (idempotent)."""
        with self._lock:
            shutil.rmtree(self.root, ignore_errors=True)


def upload_path(value, *, what: str, max_bytes: int) -> Path:
    """The local path of an uploaded file, checked for presence, emptiness and size.

    Args:
        value: what Gradio passed for the upload: a path string, a ``FileData``-like dict with a
            ``path`` key (events with ``preprocess=False``), or None.
        what: "video" or "image", for the messages.
        max_bytes: the largest accepted upload.

    Raises:
        UploadError: with the line to show.
    """
    if isinstance(value, dict):
        value = value.get("path")
    if not value:
        raise UploadError(f"no {what} uploaded: choose a file first")
    path = Path(str(value))
    if not path.is_file():
        raise UploadError(f"the uploaded {what} is gone from the server; upload it again")
    size = path.stat().st_size
    if size == 0:
        raise UploadError(f"the uploaded file {display_name(path)} is empty (0 bytes)")
    if size > max_bytes:
        raise UploadError(f"the uploaded file {display_name(path)} is {size / 2**20:.0f} MB; "
                          f"the limit is {max_bytes / 2**20:.0f} MB")
    return path


# The first bytes of still-image files, which FFmpeg would open as a one-frame "video".
IMAGE_MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"BM", b"II*\x00", b"MM\x00*", b"GIF8")


def still_image_kind(path: Path) -> str | None:
    """"PNG", "JPEG", … when ``path`` holds a still image whatever its name, else None."""
    with open(path, "rb") as f:
        head = f.read(16)
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WebP"
    names = ("PNG", "JPEG", "BMP", "TIFF", "TIFF", "GIF")
    return next((name for magic, name in zip(IMAGE_MAGIC, names, strict=True)
                 if head.startswith(magic)), None)


def display_name(path: Path) -> str:
    """The file name a user would recognise (Gradio keeps the original name)."""
    return path.name


def read_photo(path: Path) -> np.ndarray:
    """Decode an uploaded photo to H×W×3 uint8 BGR, or raise :class:`UploadError`."""
    data = np.fromfile(path, dtype=np.uint8)
    header = cv2.imdecode(data, cv2.IMREAD_REDUCED_GRAYSCALE_8)
    if header is None:
        raise UploadError(f"{display_name(path)} is not an image that can be read "
                          f"(not an image, or corrupt); use JPEG or PNG")
    # the reduced decode above is cheap; refuse decompression bombs before the full decode
    if header.shape[0] * header.shape[1] * 64 > MAX_IMAGE_PIXELS:
        raise UploadError(f"{display_name(path)} is about {header.shape[1] * 8}×"
                          f"{header.shape[0] * 8} px; the limit is "
                          f"{MAX_IMAGE_PIXELS / 1e6:.0f} megapixels")
    bgr = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if bgr is None:
        raise UploadError(f"{display_name(path)} is corrupt: it cannot be decoded completely")
    return bgr


def write_png(path: Path, image: np.ndarray) -> Path:
    """Write a PNG or raise ``OSError`` (cv2.imwrite only returns False)."""
    if not cv2.imwrite(str(path), image):
        raise OSError(f"cannot write {path}")
    return path


def zip_dir(folder: Path, target: Path) -> Path:
    """Zip the files of ``folder`` (flat, stored: PNGs do not compress further)."""
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_STORED) as zf:
        for file in sorted(folder.iterdir()):
            zf.write(file, arcname=file.name)
    return target


def csv_rows(path: Path) -> list[dict[str, str]]:
    """The rows of a CSV written by ``CsvSink``."""
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def area_summary(rows: list[dict[str, str]]) -> dict[str, str]:
    """Mean and range of the lesion area (% of the frame) over the CSV's frames."""
    values = [100 * float(r["area_frac"]) for r in rows if r.get("area_frac") not in (None, "")]
    if not values:
        return {}
    return {
        "lesion area, mean": f"{np.mean(values):.2f} %",
        "lesion area, min … max": f"{min(values):.2f} … {max(values):.2f} %",
        "frames with a lesion": f"{sum(v > 0 for v in values)} of {len(values)}",
    }


def segment_image(
    photo, threshold: float, *, runtime, owner: str = ANONYMOUS
) -> tuple[str, str, str]:
    """The Image tab: a still photo → overlay, mask PNG and lesion area.

    Args:
        photo: the upload as Gradio sends it without preprocessing (a ``FileData`` dict).
        threshold: probability above which a pixel is lesion.
        runtime: the process's :class:`stream.web.runtime.Runtime`.
        owner: the visitor the results belong to (:mod:`stream.web.access`).

    Returns:
        (path of the overlay PNG, path of the 0/255 mask PNG, Markdown with the area).

    Raises:
        UploadError: nothing uploaded, empty, too large, not an image, corrupt.
    """
    path = upload_path(photo, what="image", max_bytes=runtime.options.max_upload_mb * 2**20)
    name = photo.get("orig_name") or path.name if isinstance(photo, dict) else path.name
    stem = safe_stem(name, "image")  # the browser's name: never a path as it came
    bgr = read_photo(path)
    frame = Frame(image=bgr, index=0, pts=None, time_base=Fraction(1, 1),
                  capture_time=time.perf_counter())
    runtime.segment_still(frame, threshold=float(threshold))
    overlay = Renderer(device=runtime.engine.name, untrained=runtime.engine.untrained,
                       hud=False).render(frame, None)
    job = runtime.jobs.new("image", owner)
    mask_png = write_png(job / f"{stem}_mask.png", mask_255(frame.mask))
    overlay_png = write_png(job / f"{stem}_overlay.png", overlay)
    h, w = frame.mask.shape
    area = int(np.count_nonzero(frame.mask))
    text = (f"**Lesion area: {100 * area / frame.mask.size:.1f} %** of the image "
            f"({area} of {w}×{h} px) at threshold {float(threshold):.2f}.")
    if runtime.weights_note:
        text += f"  \n⚠ {runtime.weights_note}"
    return str(overlay_png), str(mask_png), text


def segment_video(upload, smooth: str = "off", progress=None, threshold: float | None = None,
                  hud: bool = True, *, runtime, owner: str = ANONYMOUS):
    """The Video tab: a recording through the file pipeline of ``demo.py``.

    The same :class:`~stream.pipeline.Pipeline`, source and sinks as ``demo.py --video F
    --output O --mask-dir D --csv C``, so frames and timestamps are the same.

    Args:
        upload: the uploaded file's path.
        smooth: smoothing mode.
        progress: Gradio's progress tracker (``gr.Progress``), or None.
        threshold: probability above which a pixel is lesion (None: the network's).
        hud: whether to draw the HUD into the masked video.
        runtime: the process's :class:`stream.web.runtime.Runtime`.
        owner: the visitor the results belong to (:mod:`stream.web.access`).

    Returns:
        (masked MP4 path, zip of mask PNGs, per-frame CSV path, summary rows [name, value]).

    Raises:
        UploadError: nothing uploaded, empty or too large; not a video, corrupt, or failed
            while decoding (the message names the file as uploaded).
    """
    path = upload_path(upload, what="video", max_bytes=runtime.options.max_upload_mb * 2**20)
    kind = still_image_kind(path)
    if kind is not None:
        raise UploadError(f"{path.name} is a still {kind} image, not a video: segment it in the "
                          "Image tab")
    try:
        return _run_video(path, smooth, progress, runtime, owner, threshold=threshold, hud=hud)
    except StreamError as exc:  # the page names the file as the user knows it
        raise UploadError(str(exc).replace(str(path), path.name)) from None


def _run_video(path: Path, smooth: str, progress, runtime, owner: str, *,
               threshold: float | None, hud: bool):
    engine = runtime.shared
    job = runtime.jobs.new("video", owner)
    stem = safe_stem(path.name, "video")
    # the run exactly as demo.py --video F --output O --mask-dir D --csv C wires it
    config = RunConfig(device=engine.device, source=str(path), smooth=smooth, hud=hud,
                       outputs=Outputs(video=job / f"{stem}_masked.mp4", mask_dir=job / "masks",
                                       csv=job / f"{stem}_frames.csv"))
    source = open_input(config)  # SourceError: not a video, no video stream, unreadable
    try:
        sinks = open_outputs(config, source.info)
    except BaseException:
        source.close()
        raise
    # a file's HUD: processing speed against the video's rate, not a camera's latency
    renderer = Renderer(device=engine.name, untrained=engine.untrained, hud=hud,
                        offline_fps=source.info.fps or 0.0)
    segmenter = build_segmenter(config, engine, source.info, threshold=threshold,
                                renderer=renderer)
    pipeline = build_pipeline(config, source, engine, sinks=sinks, segmenter=segmenter)
    smoother = pipeline.smoother
    outputs = {"output": config.outputs.video, "mask_dir": config.outputs.mask_dir,
               "csv_path": config.outputs.csv}
    total = source.info.frame_count
    report = None
    if progress is not None:
        progress((0, total), desc="segmenting", unit="frames")

        def report(stats) -> None:
            progress((stats.frames_out, total), desc="segmenting", unit="frames")

    summary = pipeline.run(progress=report, handle_sigint=False)
    if summary.frames_out == 0:
        raise UploadError(f"{path.name} has no video frames that could be decoded")
    masks_zip = zip_dir(outputs["mask_dir"], job / f"{stem}_masks.zip")
    shutil.rmtree(outputs["mask_dir"], ignore_errors=True)
    fps = source.info.fps
    rows = [
        ["input", f"{path.name}: {source.info.size_wh[0]}×{source.info.size_wh[1]}, "
                  f"{fps:.2f} fps"],
        ["frames", f"{summary.frames_out} written of {summary.frames_in} decoded"],
        # a file is not a camera: how fast it was processed, not live latency or capture rate
        ["processing speed", f"{summary.fps:.1f} frames/s on {summary.device}"
         + (f" ({summary.fps / fps:.2f}× the video's rate)" if fps else "")
         + f", {summary.wall_s:.1f} s in all"],
        ["smoothing", smoother.mode + (f" (chosen by {smooth})" if smooth != smoother.mode
                                       else "")],
        ["threshold", f"{smoother.threshold:.2f}"],
    ]
    net = [summary.latency[s][0] for s in NET_STAGES if s in summary.latency]
    if net:
        rows.append(["network time per frame", f"p50 {sum(net):.1f} ms"])
    rows += [[k, v] for k, v in area_summary(csv_rows(outputs["csv_path"])).items()]
    if runtime.weights_note:
        rows.append(["warning", runtime.weights_note])
    return str(outputs["output"]), str(masks_zip), str(outputs["csv_path"]), rows
