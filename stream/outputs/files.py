"""Where results go: any combination of video, mask PNGs, mask video and a per-frame CSV.

Every sink has ``name``, ``open(info)``, ``write(frame)`` and an idempotent ``close()`` that
finalises its output. Outputs are checked at ``open`` (missing or read-only directory, the
input file itself) and write failures such as a full disk raise
:class:`~stream.errors.SinkError` naming the file. The video writers live in
:mod:`stream.outputs.video`.

========================  =================================================================
``--output PATH``         :class:`VideoSink`: rendered frames, H.264 fragmented MP4 + audio
``--mask-dir DIR``        :class:`MaskDirSink`: ``frame_%06d.png`` (0/255) per frame
``--mask-video PATH``     :class:`MaskVideoSink`: lossless FFV1 grey MKV
``--csv PATH``            :class:`CsvSink`: lesion area, box, centroid and stage times
========================  =================================================================
"""

from __future__ import annotations

import csv
import errno
from pathlib import Path

import cv2
import numpy as np

from stream.errors import SinkError
from stream.frame import Frame, SourceInfo
from stream.outputs.base import (
    PtsClock,
    Sink,
    check_output_dir,
    check_output_file,
    describe_os_error,
)
from stream.outputs.video import MaskVideoSink, VideoSink, mask_255

# stage columns always present in the CSV (empty when a frame skipped the stage), in this order
KNOWN_STAGES = ("decode", "capture", "preprocess", "infer", "postprocess", "smooth", "render")


class MaskDirSink(Sink):
    """``--mask-dir DIR``: one ``frame_%06d.png`` per frame, 0/255, at the frame's size.

    Files are numbered by ``frame.index``, the frame's position in the source, so names match
    the CSV rows (a camera's dropped frames leave gaps). The directory is created if its
    parent exists.
    """

    name = "mask dir"
    PATTERN = "frame_{:06d}.png"

    def _open(self, info: SourceInfo) -> None:
        check_output_dir(self.path, what="mask directory")
        try:
            self.path.mkdir(exist_ok=True)
        except OSError as exc:  # /proc, /sys: the parent looks writable and takes no directory
            reason = describe_os_error(exc)
            if exc.errno == errno.ENOENT:
                reason = f"{self.path.absolute().parent} takes no new directories"
            raise SinkError(f"cannot create mask directory {self.path}: {reason}") from None
        if any(self.path.glob("frame_*.png")):
            self.warnings.append(f"{self.path}: older frame_*.png files are overwritten or left")

    def _write(self, frame: Frame) -> None:
        if frame.mask is None:
            raise ValueError(f"frame {frame.index} reached the mask directory without a mask")
        ok, png = cv2.imencode(".png", mask_255(frame.mask), [cv2.IMWRITE_PNG_COMPRESSION, 1])
        if not ok:
            raise OSError(f"PNG encoding of frame {frame.index} failed")
        target = self.path / self.PATTERN.format(frame.index)
        try:
            with open(target, "wb") as f:
                f.write(png.tobytes())
        except OSError as exc:
            target.unlink(missing_ok=True)  # no truncated PNG left behind
            self._failed = SinkError(
                f"cannot write {target}: {describe_os_error(exc)}; {self._incomplete_note()}"
            )
            raise self._failed from None

    def _close(self) -> None:
        pass

    def _incomplete_note(self) -> str:
        return f"the mask directory is incomplete (masks for {self.written} frames)"


class CsvSink(Sink):
    """``--csv PATH``: one row per frame with the lesion's size and place and stage times.

    Columns: ``index, pts_s, area_px, area_frac, bbox_x, bbox_y, bbox_w, bbox_h, centroid_x,
    centroid_y`` then ``ms_<stage>`` for the stages in :data:`KNOWN_STAGES` and any other the
    first frame carries. Box and centroid are empty when no lesion is found. ``pts_s`` is the
    presentation time (capture time since the first frame for cameras). Rows are written line
    by line, so a crash loses at most the row being written.
    """

    name = "csv"
    COLUMNS = (
        "index",
        "pts_s",
        "area_px",
        "area_frac",
        "bbox_x",
        "bbox_y",
        "bbox_w",
        "bbox_h",
        "centroid_x",
        "centroid_y",
    )

    def __init__(self, path) -> None:
        super().__init__(path)
        self._file = self._writer = None
        self._stages: list[str] | None = None

    def _open(self, info: SourceInfo) -> None:
        check_output_file(self.path, info, what="CSV file")
        self._clock = PtsClock(info.time_base)
        try:
            self._file = open(self.path, "w", newline="", buffering=1)  # noqa: SIM115
        except OSError as exc:
            raise SinkError(f"cannot write {self.path}: {describe_os_error(exc)}") from None
        self._writer = csv.writer(self._file)

    def _write(self, frame: Frame) -> None:
        if self._stages is None:
            extra = [s for s in frame.timings if s not in KNOWN_STAGES]
            self._stages = [*KNOWN_STAGES, *extra]
            self._writer.writerow([*self.COLUMNS, *(f"ms_{s}" for s in self._stages)])
        elif any(s not in self._stages for s in frame.timings):
            new = [s for s in frame.timings if s not in self._stages]
            note = f"{self.path.name}: stage(s) {', '.join(new)} appeared after the header"
            if note not in self.warnings:
                self.warnings.append(note + "; not in the CSV")
        self._writer.writerow(
            [
                frame.index,
                f"{self._clock.seconds(frame):.6f}",
                *lesion_stats(frame.mask),
                *(_ms(frame.timings.get(s)) for s in self._stages),
            ]
        )

    def _close(self) -> None:
        if self._stages is None:  # no frame: still a valid CSV with its header
            self._writer.writerow([*self.COLUMNS, *(f"ms_{s}" for s in KNOWN_STAGES)])
        self._file.close()

    def _incomplete_note(self) -> str:
        return f"the CSV is incomplete ({self.written} rows written)"


def lesion_stats(mask: np.ndarray | None) -> list[object]:
    """[area_px, area_frac, bbox x, y, w, h, centroid x, y] of an H×W {0,1} mask.

    Box and centroid are empty strings when the mask is empty; all are empty without a mask.
    """
    if mask is None:
        return [""] * 8
    binary = (mask > 0).astype(np.uint8)
    area = int(cv2.countNonZero(binary))
    frac = f"{area / binary.size:.6f}"
    if area == 0:
        return [0, frac, "", "", "", "", "", ""]
    x, y, w, h = cv2.boundingRect(binary)
    m = cv2.moments(binary, binaryImage=True)
    return [area, frac, x, y, w, h, f"{m['m10'] / m['m00']:.2f}", f"{m['m01'] / m['m00']:.2f}"]


def _ms(value: float | None) -> str:
    return "" if value is None else f"{value:.3f}"


def open_sinks(
    info: SourceInfo,
    *,
    output: str | Path | None = None,
    mask_dir: str | Path | None = None,
    mask_video: str | Path | None = None,
    csv_path: str | Path | None = None,
) -> list[Sink]:
    """Build and open the sinks asked for; on any error close those already open and re-raise.

    Raises:
        SinkError: an output cannot be written, or two outputs name the same path.
    """
    wanted = [
        (VideoSink, output),
        (MaskDirSink, mask_dir),
        (MaskVideoSink, mask_video),
        (CsvSink, csv_path),
    ]
    paths = [Path(p).expanduser().absolute() for _, p in wanted if p is not None]
    for p in paths:
        if paths.count(p) > 1:
            raise SinkError(f"{p} is named for two outputs; give each its own path")
    sinks: list[Sink] = []
    try:
        for cls, p in wanted:
            if p is not None:
                sink = cls(p)
                sink.open(info)
                sinks.append(sink)
    except BaseException:
        for sink in sinks:
            sink.discard()  # nothing was written: leave no empty outputs behind
        raise
    return sinks


__all__ = [
    "Sink",
    "VideoSink",
    "MaskDirSink",
    "MaskVideoSink",
    "CsvSink",
    "open_sinks",
    "lesion_stats",
    "check_output_file",
]
