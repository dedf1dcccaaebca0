"""One recording, start to finish: the same code in this process, a worker process or a Ray actor.

A :class:`Worker` builds the engine once (through :mod:`stream.assembly`, like every front end)
and then, per recording, opens the input, the outputs in a private staging folder and the
pipeline, runs it, writes ``result.json`` last and moves the folder into ``OUT/<key>/`` by
renames. A recording that cannot be read or fails mid-way becomes a ``failed`` result with the
reason; a Ctrl-C leaves nothing in ``OUT`` (the staging folder is emptied by the next run).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
import uuid
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np
import torch

from stream.assembly import (
    Outputs,
    RunConfig,
    build_engine,
    build_pipeline,
    build_segmenter,
    open_input,
    open_outputs,
    release,
)
from stream.batch.plan import RESULT, STAGING, Options, Recording, commit
from stream.command import one_line
from stream.faults import Fault
from stream.frame import Frame, SourceInfo
from stream.outputs import Sink

CRASH_EXIT = 70  # the status of a worker that a crash hook killed
FILES = {"video": "overlay.mp4", "masks": "masks", "csv": "frames.csv",
         "mask-video": "masks.mkv"}
THUMBNAIL = "thumbnail.jpg"
THUMB_W = 160  # px: the report's thumbnails
SERIES = 120  # points of lesion area kept for the report's plot


@dataclass(frozen=True)
class Crash(Fault):
    """Kill this process at frame ``at`` of a recording (the retry and resume tests)."""

    def check(self, stage: str, item: object) -> None:
        """End the process at once, as a killed worker would, when ``item`` is due."""
        frames = item if isinstance(item, list) else [item]
        if stage == self.stage and any(isinstance(f, Frame) and f.index >= self.at for f in frames):
            os._exit(CRASH_EXIT)


class Recorder(Sink):
    """The report's view of a recording: lesion area per frame and a mid-recording overlay."""

    name = "report"

    def __init__(self, path: Path, frames: int | None) -> None:
        super().__init__(path)
        self.areas: list[float] = []
        self._middle = (frames or 1) // 2
        self._thumb: np.ndarray | None = None

    def _open(self, info: SourceInfo) -> None:
        pass

    def _write(self, frame: Frame) -> None:
        mask = frame.mask
        self.areas.append(0.0 if mask is None else float(np.count_nonzero(mask)) / mask.size)
        if self._thumb is None and frame.index >= self._middle and frame.rendered is not None:
            w, h = frame.size_wh
            size_wh = (THUMB_W, max(1, round(h * THUMB_W / w)))
            self._thumb = cv2.resize(frame.rendered, size_wh, interpolation=cv2.INTER_AREA)

    def _close(self) -> None:
        if self._thumb is not None:
            cv2.imwrite(str(self.path), self._thumb, [cv2.IMWRITE_JPEG_QUALITY, 80])

    def summary(self) -> dict:
        """Mean and largest area fraction, frames with a lesion, and a short series."""
        areas = np.asarray(self.areas, np.float64)
        if areas.size == 0:
            return {"mean_frac": 0.0, "max_frac": 0.0, "lesion_frames": 0, "series": []}
        step = max(1, math.ceil(areas.size / SERIES))
        series = [round(float(a), 5) for a in areas[::step]]
        return {"mean_frac": round(float(areas.mean()), 6),
                "max_frac": round(float(areas.max()), 6),
                "lesion_frames": int(np.count_nonzero(areas)), "series": series}


class Worker:
    """Processes recordings one after another with one engine, built on first use.

    Args:
        out: the batch's output folder (``OUT``).
        options: how every recording is processed.
    """

    def __init__(self, out: str | Path, options: Options) -> None:
        self.out, self.options = Path(out), options
        self.config = RunConfig(
            device=torch.device(options.device), weights=options.weights,
            precision=options.precision, batch=options.batch, threads=options.threads,
            runtime=options.runtime, tta=options.tta, smooth=options.smooth, hud=options.hud,
            max_frames=options.max_frames)
        self._engine = None
        if options.device == "cpu":
            cv2.setNumThreads(options.threads)

    @property
    def engine(self):
        """The network, built once per worker."""
        if self._engine is None:
            self._engine = build_engine(self.config)
        return self._engine

    def process(self, recording: Recording, attempt: int = 0) -> dict:
        """Segment ``recording`` into ``OUT/<key>/``; returns its result (also in result.json).

        Raises:
            KeyboardInterrupt: Ctrl-C; nothing of this recording is moved into ``OUT``.
        """
        staged = self.out / STAGING / f"{recording.key}.{uuid.uuid4().hex[:8]}"
        staged.mkdir(parents=True)
        result = {"key": recording.key, "input": recording.identity,
                  "options": self.options.fingerprint(), "attempts": attempt + 1}
        t0 = time.perf_counter()
        try:
            result.update(self._run(recording, staged, attempt))
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # one recording's failure is its row, never the batch's
            shutil.rmtree(staged)  # a failed recording keeps only its result
            staged.mkdir()
            result.update(status="failed", reason=one_line(exc), frames_in=0, frames_out=0)
        result["wall_s"] = round(time.perf_counter() - t0, 3)
        _write_json(staged / RESULT, result)  # last: its presence means the folder is whole
        commit(staged, self.out / recording.key)
        return result

    def _run(self, recording: Recording, staged: Path, attempt: int) -> dict:
        wanted = self.options.outputs
        files = {name: staged / FILES[name] for name in wanted}
        config = replace(self.config, source=recording.path, outputs=Outputs(
            video=files.get("video"), mask_dir=files.get("masks"),
            mask_video=files.get("mask-video"), csv=files.get("csv")))
        crash = self.options.extra.get("crash")
        fault = None
        if crash and attempt == 0 and crash[0] == recording.key:
            fault = Crash("engine", crash[1])
        source = open_input(config)
        sinks: list = []
        segmenter = None
        try:
            engine = self.engine
            segmenter = build_segmenter(config, engine, source.info)
            sinks = open_outputs(config, source.info)
            frames = source.info.frame_count
            if config.max_frames is not None and frames is not None:
                frames = min(frames, config.max_frames)
            recorder = Recorder(staged / THUMBNAIL, frames)
            recorder.open(source.info)
            sinks.append(recorder)
        except BaseException:
            release(source, segmenter, sinks)
            raise
        pipeline = build_pipeline(config, source, engine, sinks=sinks, segmenter=segmenter,
                                  fault=fault)
        summary = pipeline.run()
        if summary.interrupted:
            raise KeyboardInterrupt
        info = source.info
        unreadable = source.stats().get("unreadable", 0)
        return {
            "status": "ok",
            "reason": f"{unreadable} unreadable frame(s) skipped" if unreadable else "",
            "frames_in": summary.frames_in, "frames_out": summary.frames_out,
            "fps": round(summary.fps, 2),
            "duration_s": round(summary.frames_in / info.fps, 3) if info.fps > 0 else None,
            "size_wh": list(info.size_wh), "device": engine.name, "mode": segmenter.mode,
            "area": recorder.summary(),
            "outputs": sorted(FILES[name] for name in wanted),
        }


def record_failure(out: str | Path, recording: Recording, options: Options, reason: str, *,
                   attempts: int) -> dict:
    """Write a ``failed`` result for a recording that no worker could finish (it died)."""
    staged = Path(out) / STAGING / f"{recording.key}.{uuid.uuid4().hex[:8]}"
    staged.mkdir(parents=True)
    result = {"key": recording.key, "input": recording.identity,
              "options": options.fingerprint(), "attempts": attempts, "status": "failed",
              "reason": reason, "frames_in": 0, "frames_out": 0}
    _write_json(staged / RESULT, result)
    commit(staged, Path(out) / recording.key)
    return result


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
