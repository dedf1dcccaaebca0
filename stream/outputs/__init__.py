"""Outputs: where processed frames go.

``render`` (mask overlay and HUD), ``video`` (H.264 and lossless mask video), ``files`` (mask
PNGs, the per-frame CSV, and :func:`open_sinks` for the CLI's flags), ``window`` (the OpenCV
window and the :class:`Controls` it drives), ``base`` (what every sink shares).

The members that encode video need PyAV; they are imported on first use, so that a machine
without PyAV (a GPU machine benchmarking the pipeline on frames in memory) imports the rest.
"""

from stream.lazy import lazy_members
from stream.outputs.base import PtsClock, Sink
from stream.outputs.render import Renderer, file_hud_lines, hud_lines, smoothing_text
from stream.outputs.window import Controls, WindowSink, display_problem

_NEED_PYAV = {
    "CsvSink": "stream.outputs.files",
    "MaskDirSink": "stream.outputs.files",
    "lesion_stats": "stream.outputs.files",
    "open_sinks": "stream.outputs.files",
    "MaskVideoSink": "stream.outputs.video",
    "VideoSink": "stream.outputs.video",
    "mask_255": "stream.outputs.video",
}

__all__ = [
    "Controls",
    "CsvSink",
    "MaskDirSink",
    "MaskVideoSink",
    "PtsClock",
    "Renderer",
    "Sink",
    "VideoSink",
    "WindowSink",
    "display_problem",
    "file_hud_lines",
    "hud_lines",
    "lesion_stats",
    "mask_255",
    "open_sinks",
    "smoothing_text",
]

__getattr__ = lazy_members(__name__, _NEED_PYAV)
