"""Sources: where frames come from, each read by its own capture thread.

``file`` (PyAV decoding, lossless or paced like a camera), ``camera`` (OpenCV capture with
reconnection), ``loop`` (a file played forever, for the soak), and :func:`open_source`, which
opens whichever the user named.
"""

from stream.sources.base import Source, is_camera_spec
from stream.sources.camera import CameraSource
from stream.sources.factory import open_source
from stream.sources.file import SAMPLE, FileSource
from stream.sources.loop import LoopingSource

__all__ = [
    "SAMPLE",
    "CameraSource",
    "FileSource",
    "LoopingSource",
    "Source",
    "is_camera_spec",
    "open_source",
]
