"""Opening a source from what the user typed: a camera index or /dev/videoN, else a file."""

from __future__ import annotations

from pathlib import Path

from stream.sources.base import Source, is_camera_spec
from stream.sources.camera import CameraSource
from stream.sources.file import FileSource

LIVE_QUEUE = 2  # a camera or --realtime file: frames waiting here are latency (drops: oldest)
FILE_QUEUE = 8  # a file at full speed: the decoder may run ahead of the network


def open_source(
    spec: int | str,
    *,
    realtime: bool = False,
    width: int | None = None,
    height: int | None = None,
    fps: float | None = None,
    mjpg: bool = False,
    queue_size: int | None = None,
    video_stream: int | None = None,
) -> Source:
    """Open a camera (index or /dev/video* path) or a video file.

    Args:
        spec: camera index, V4L2 device path, or video file path.
        realtime: files only: pace playback at the file's own rate and drop frames like a
            camera when the consumer falls behind.
        width: cameras only: requested capture width.
        height: cameras only: requested capture height.
        fps: cameras only: requested capture rate.
        mjpg: cameras only: request the MJPG pixel format (higher rates over USB 2).
        queue_size: bound of the frame queue; None: :data:`LIVE_QUEUE` for a camera or a
            ``realtime`` file (when the network is slower than the source, every frame waiting
            there adds one frame time to what the screen shows), :data:`FILE_QUEUE` otherwise.
        video_stream: files only: the index of the video stream to process (default: the
            longest real video stream).

    Returns:
        An opened, not yet started :class:`Source`.

    Raises:
        SourceError: the input cannot be opened; the message is one line naming it.
    """
    camera = is_camera_spec(spec)
    if queue_size is None:
        queue_size = LIVE_QUEUE if camera or realtime else FILE_QUEUE
    if queue_size < 1:
        raise ValueError("queue_size must be >= 1")
    if camera:
        text = str(spec).strip()
        device: int | str = int(text) if text.isdigit() else text
        source: Source = CameraSource(
            device, width=width, height=height, fps=fps, mjpg=mjpg, queue_size=queue_size
        )
        if realtime:
            source.warnings.append("--realtime applies to files only; a camera is live anyway")
        if video_stream is not None:
            source.warnings.append("--video-stream applies to files only; ignored")
        return source

    source = FileSource(
        Path(spec), realtime=realtime, queue_size=queue_size, video_stream=video_stream
    )
    ignored = [
        name
        for name, value in (("width", width), ("height", height), ("fps", fps), ("mjpg", mjpg))
        if value
    ]
    if ignored:
        source.warnings.append(
            f"camera settings ({', '.join(ignored)}) do not apply to a video file; ignored"
        )
    return source

