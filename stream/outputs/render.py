"""Render: the mask as a tint and a contour over the frame, and the heads-up display.

The HUD shows what an operator needs to trust the picture: capture and processed FPS,
end-to-end and per-stage latency (p50/p95 over the last frames), dropped frames, the device,
and, in red, ``UNTRAINED WEIGHTS`` when the network has random weights. Text size follows the
frame height so that the HUD reads the same on 160×120 and 1920×1080.

A recording processed offline has no camera and no viewer waiting: its HUD
(:func:`file_hud_lines`, ``Renderer(offline_fps=...)``) says how fast the file was processed
against the video's own rate and how long the network took per frame, in smaller text.
"""

from __future__ import annotations

import math
import time

import cv2
import numpy as np

from stream.engines.base import NET_STAGES
from stream.frame import Frame
from stream.stats import E2E, Snapshot

TINT_BGR = (60, 60, 255)  # red-ish lesion tint
CONTOUR_BGR = (0, 255, 255)  # yellow outline, visible on skin and on the tint
WARN_BGR = (0, 0, 255)
TEXT_BGR = (255, 255, 255)
STAGE_LABELS = {"preprocess": "pre", "infer": "infer", "postprocess": "post", "smooth": "smooth",
                "render": "render", "decode": "decode", "capture": "capture"}


def overlay_mask(image: np.ndarray, mask: np.ndarray, *, alpha: float = 0.4,
                 thickness: int | None = None) -> np.ndarray:
    """A copy of ``image`` with ``mask`` tinted and outlined.

    Args:
        image: H×W×3 uint8 BGR.
        mask: H×W uint8 in {0, 1}.
        alpha: weight of the tint colour inside the mask.
        thickness: contour width in px (default: ~0.3 % of the frame height, at least 1).

    Returns:
        H×W×3 uint8 BGR.
    """
    out = image.copy()
    x, y, w, h = cv2.boundingRect(mask)
    if w == 0 or h == 0:
        return out
    # blend only inside the mask's bounding box (on a 1080p frame most pixels are untouched),
    # with OpenCV calls throughout: numpy broadcasting and masked copies cost several times more
    roi = out[y:y + h, x:x + w]
    blended = cv2.addWeighted(roi, 1.0 - alpha, roi, 0.0, 0.0)
    blended = cv2.add(blended, tuple(alpha * c for c in TINT_BGR) + (0.0,))
    cv2.copyTo(blended, mask[y:y + h, x:x + w], roi)  # writes into ``out`` through the view
    if thickness is None:
        thickness = max(1, round(image.shape[0] / 360))
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(out, contours, -1, CONTOUR_BGR, thickness, cv2.LINE_AA)
    return out


def _ms(value: float) -> str:
    return "-" if math.isnan(value) else (f"{value:.0f}" if value >= 10 else f"{value:.1f}")


def smoothing_text(notes: dict) -> str:
    """What the smoothing stage did to a frame, from its notes: "smoothing keyframe every 6"."""
    mode = notes.get("smooth")
    if mode is None:
        return ""
    text = f"smoothing {mode}"
    if "keyframe_interval" in notes:
        text += f" every {notes['keyframe_interval']}"
    return text


def hud_lines(snapshot: Snapshot, *, device: str, untrained: bool, status: str | None = None,
              notes: dict | None = None,
              latency: str = "latency") -> list[tuple[str, tuple[int, int, int]]]:
    """The HUD's text, line by line, each with its colour (BGR); ``notes`` are the frame's.

    ``latency`` names the end-to-end figure: "latency" where the pipeline took the frame from
    the camera itself, "server" where the frame came over a network (the web demo's Live tab,
    whose page measures the whole round trip itself).
    """
    lines: list[tuple[str, tuple[int, int, int]]] = []
    if untrained:
        lines.append(("UNTRAINED WEIGHTS - masks are meaningless", WARN_BGR))
    if status:
        lines.append((status, WARN_BGR))
    smoothing = smoothing_text(notes or {})
    lines.append((f"device {device}" + (f"  {smoothing}" if smoothing else ""), TEXT_BGR))
    lines.append((f"capture {snapshot.capture_fps:.1f} fps  processed {snapshot.processed_fps:.1f}"
                  f" fps  dropped {snapshot.dropped}", TEXT_BGR))
    e2e = snapshot.latency.get(E2E)
    if e2e is not None:
        lines.append((f"{latency} p50 {_ms(e2e[0])} / p95 {_ms(e2e[1])} ms", TEXT_BGR))
    stages = [(s, v) for s, v in snapshot.latency.items() if s != E2E]
    for start in range(0, len(stages), 3):  # three stages a line keeps lines short
        part = "  ".join(f"{STAGE_LABELS.get(s, s)} {_ms(p50)}/{_ms(p95)}"
                         for s, (p50, p95) in stages[start:start + 3])
        lines.append((part + " ms", TEXT_BGR))
    return lines


def file_hud_lines(snapshot: Snapshot, *, device: str, untrained: bool, video_fps: float,
                   notes: dict | None = None) -> list[tuple[str, tuple[int, int, int]]]:
    """The offline HUD's text: processing speed against the video's rate, network time per frame.

    A file is not a camera: no capture rate, no end-to-end latency, no drops.
    """
    lines: list[tuple[str, tuple[int, int, int]]] = []
    if untrained:
        lines.append(("UNTRAINED WEIGHTS", WARN_BGR))
    smoothing = smoothing_text(notes or {})
    lines.append((device + (f"  {smoothing}" if smoothing else ""), TEXT_BGR))
    speed = f"{snapshot.processed_fps:.1f} fps" if snapshot.processed_fps > 0 else "- fps"
    if video_fps > 0 and snapshot.processed_fps > 0:
        speed += f" = {snapshot.processed_fps / video_fps:.2f}x video rate"
    lines.append((speed, TEXT_BGR))
    net = [snapshot.latency[s][0] for s in NET_STAGES if s in snapshot.latency]
    if net and not any(math.isnan(v) for v in net):
        lines.append((f"network p50 {_ms(sum(net))} ms/frame", TEXT_BGR))
    return lines


def draw_hud(image: np.ndarray, lines: list[tuple[str, tuple[int, int, int]]], *,
             size: float = 1.0) -> tuple[int, int]:
    """Draw ``lines`` in the top-left corner of ``image`` (in place) on a dark box.

    Args:
        image: H×W×3 uint8 BGR.
        lines: text and colour (BGR) per line.
        size: text size relative to the live HUD's (the offline HUD uses less).

    Returns:
        (width, height) of the box in px.
    """
    height = image.shape[0]
    scale = max(0.3, min(1.0, height / 900)) * size
    thick = 1 if scale < 0.6 else 2
    font = cv2.FONT_HERSHEY_SIMPLEX
    sizes = [cv2.getTextSize(text, font, scale, thick)[0] for text, _ in lines]
    line_h = max(h for _, h in sizes) + max(3, int(8 * scale))
    pad = max(2, int(6 * scale))
    box_w = min(image.shape[1], max(w for w, _ in sizes) + 2 * pad)
    box_h = min(height, line_h * len(lines) + pad)
    roi = image[:box_h, :box_w]
    cv2.addWeighted(roi, 0.35, roi, 0.0, 0.0, dst=roi)  # darken, keep the picture faintly visible
    for i, (text, colour) in enumerate(lines):
        baseline = pad + (i + 1) * line_h - max(2, int(5 * scale))
        cv2.putText(image, text, (pad, baseline), font, scale, colour, thick, cv2.LINE_AA)
    return box_w, box_h


class Renderer:
    """Frame + mask (+ HUD) → ``frame.rendered``; toggles are read at every frame.

    Args:
        device: engine name for the HUD, e.g. "cpu fp32".
        untrained: show the UNTRAINED WEIGHTS warning.
        hud: show the HUD (``--no-hud`` turns it off; the window's h key toggles it).
        mask: draw the mask (the window's m key toggles it).
        offline_fps: a recording's own frame rate: draw the offline HUD (:func:`file_hud_lines`)
            instead of the live one (None: live, as the command line's window and outputs).
        latency: the live HUD's name for the end-to-end figure (see :func:`hud_lines`).
    """

    OFFLINE_SIZE = 0.7  # the offline HUD's text size relative to the live one

    def __init__(self, *, device: str, untrained: bool = False, hud: bool = True,
                 mask: bool = True, offline_fps: float | None = None,
                 latency: str = "latency") -> None:
        self.device, self.latency = device, latency
        self.offline_fps = offline_fps
        self.untrained = untrained
        self.show_hud = hud
        self.show_mask = mask

    def render(self, frame: Frame, snapshot: Snapshot | None, *,
               status: str | None = None) -> np.ndarray:
        """The picture for ``frame`` as the current toggles say (does not modify ``frame``).

        Args:
            frame: with ``image`` and, after the engine, ``mask``.
            snapshot: live numbers for the HUD (None: no HUD yet).
            status: a source's live state ("camera lost, reconnecting"), shown in red.

        Returns:
            H×W×3 uint8 BGR.
        """
        if self.show_mask and frame.mask is not None:
            out = overlay_mask(frame.image, frame.mask)
        else:
            out = frame.image.copy()
        if self.show_hud and snapshot is not None and self.offline_fps is not None:
            draw_hud(out, file_hud_lines(snapshot, device=self.device, untrained=self.untrained,
                                         video_fps=self.offline_fps, notes=frame.notes),
                     size=self.OFFLINE_SIZE)
        elif self.show_hud and snapshot is not None:
            draw_hud(out, hud_lines(snapshot, device=self.device, untrained=self.untrained,
                                    status=status, notes=frame.notes, latency=self.latency))
        elif self.untrained:  # even without the HUD, random weights are never shown silently
            draw_hud(out, [("UNTRAINED WEIGHTS", WARN_BGR)])
        return out

    def __call__(self, frame: Frame, snapshot: Snapshot | None, *,
                 status: str | None = None) -> None:
        """Set ``frame.rendered`` and record ``timings["render"]``."""
        t0 = time.perf_counter()
        frame.rendered = self.render(frame, snapshot, status=status)
        frame.timings["render"] = (time.perf_counter() - t0) * 1e3
