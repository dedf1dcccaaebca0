"""Sources: where frames come from, each read by its own capture thread.

``file`` (PyAV decoding, lossless or paced like a camera), ``camera`` (OpenCV capture with
reconnection), ``loop`` (a file played forever, for the soak), ``memory`` (pictures already in
memory, played like a file or a camera: benchmarks), ``pool`` (the reused, possibly pinned,
buffers a source lands its pictures in), and :func:`open_source`, which opens whichever the
user named.

The members that decode files need PyAV; they are imported on first use, so that a machine
without PyAV (a GPU machine running the benchmark on frames in memory) can import the rest.
"""

from stream.lazy import lazy_members
from stream.sources.base import Source, is_camera_spec
from stream.sources.camera import CameraSource
from stream.sources.memory import MemorySource
from stream.sources.pool import FramePool

_NEED_PYAV = {
    "SAMPLE": "stream.sources.file",
    "FileSource": "stream.sources.file",
    "LoopingSource": "stream.sources.loop",
    "open_source": "stream.sources.factory",
}

__all__ = [
    "SAMPLE",
    "CameraSource",
    "FileSource",
    "FramePool",
    "LoopingSource",
    "MemorySource",
    "Source",
    "is_camera_spec",
    "open_source",
]

__getattr__ = lazy_members(__name__, _NEED_PYAV)
