"""Outputs: where processed frames go.

``render`` (mask overlay and HUD), ``video`` (H.264 and lossless mask video), ``files`` (mask
PNGs, the per-frame CSV, and :func:`open_sinks` for the CLI's flags), ``window`` (the OpenCV
window and the :class:`Controls` it drives), ``base`` (what every sink shares).
"""

from stream.outputs.base import PtsClock, Sink
from stream.outputs.files import CsvSink, MaskDirSink, lesion_stats, open_sinks
from stream.outputs.render import Renderer, file_hud_lines, hud_lines, smoothing_text
from stream.outputs.video import MaskVideoSink, VideoSink, mask_255
from stream.outputs.window import Controls, WindowSink, display_problem

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
