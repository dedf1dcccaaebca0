"""Video file sinks: the rendered overlay as H.264 MP4, the masks as lossless FFV1 MKV.

The MP4 keeps the input's timing exactly: its video track's timescale is the source time
base's denominator (``video_track_timescale``; left alone, FFmpeg raises it to at least 10000,
so 1/1000 became 1/16000), the movie timescale is the same (``movie_timescale``; at its default
1/1000 the edit list that holds a non-zero start time rounded every PTS to a millisecond), and
every frame is muxed with the input PTS (variable frame rate stays variable; camera frames get
PTS from their capture times). The input's audio is copied without re-encoding where MP4 can
hold it, else transcoded to AAC (:mod:`stream.outputs.audio`). The file is fragmented (one
fragment per keyframe, a keyframe per second), so a process killed mid-run leaves a file that
plays up to its last complete fragment. libx264 runs with ``tune=zerolatency`` and no B-frames:
each frame comes out as it goes in, nothing is reordered or held back, and the frame count
always matches. After closing, the file is read back: a muxer that wrote fewer frames than it
was given (FFmpeg logs some refusals without raising) is a :class:`SinkError`, never a quiet
success.
"""

from __future__ import annotations

from fractions import Fraction

import av
import cv2
import numpy as np

from stream.errors import SinkError
from stream.frame import Frame, SourceInfo
from stream.outputs.audio import AudioTrack
from stream.outputs.base import PtsClock, Sink, check_output_file, describe_os_error

# delay_moov: the index goes out with the first fragment, so a non-zero start time survives as
# an edit list (empty_moov would shift the first frame to t=0)
MP4_OPTIONS = {"movflags": "frag_keyframe+delay_moov+default_base_moof", "flush_packets": "1"}
# a cluster a second, written at once: a killed process loses about a second of masks (the
# muxer's default holds up to 5 s in memory, and a file killed before that holds nothing)
# bitexact: no random segment UID or date, so the same masks give the same file
MKV_OPTIONS = {"cluster_time_limit": "1000", "flush_packets": "1", "fflags": "+bitexact"}
AUDIO_LEAD_S = 0.5  # copy audio up to this far past the last video frame written


class VideoSink(Sink):
    """``--output PATH``: ``frame.rendered`` (or the raw image) as H.264 yuv420p fragmented MP4.

    Args:
        path: the .mp4 to write.
        codec: FFmpeg encoder name.
        preset: x264 speed preset.
        crf: x264 constant quality (lower is better and larger).
        keyframe_s: seconds between keyframes, hence between fragments.
        copy_audio: copy the input's first audio stream, when it has one (transcoded to AAC
            where MP4 cannot hold it).
    """

    name = "video"

    def __init__(
        self,
        path,
        *,
        codec: str = "libx264",
        preset: str = "veryfast",
        crf: int = 21,
        keyframe_s: float = 1.0,
        copy_audio: bool = True,
    ) -> None:
        super().__init__(path)
        self.codec, self.preset, self.crf = codec, preset, crf
        self.keyframe_s, self.copy_audio = keyframe_s, copy_audio
        self._out = self._stream = self._file = None
        self._audio: AudioTrack | None = None
        self._last_s = 0.0
        self._broken: str | None = None  # what the read-back found missing
        self._held: str | None = None  # what plays of a file whose writes failed at close

    @property
    def broken(self) -> str | None:
        """What the finished file lacks (read back after closing or a write failure), or None."""
        return self._broken

    @property
    def audio_packets(self) -> int:
        """Audio packets muxed so far."""
        return self._audio.packets if self._audio is not None else 0

    def _open(self, info: SourceInfo) -> None:
        check_output_file(self.path, info, what="output video")
        if self.path.suffix.lower() not in (".mp4", ".m4v", ".mov"):
            self.warnings.append(f"{self.path.name}: written as MP4 whatever its extension")
        w, h = info.size_wh
        self._size_wh = (w + w % 2, h + h % 2)  # yuv420p needs even sides
        if self._size_wh != (w, h):
            self.warnings.append(
                f"{self.path.name}: {w}×{h} padded to {self._size_wh[0]}×{self._size_wh[1]} "
                "(H.264 yuv420p needs even sides); frame count and timestamps unchanged"
            )
        # MP4 time bases are 1/timescale: a/b keeps exact times (not ticks) as 1/b
        timescale = Fraction(info.time_base).denominator
        self._clock = PtsClock(Fraction(1, timescale))
        audio = "copy" if self.copy_audio and info.path else None
        error = None
        # copy the audio; where the muxer refuses it, AAC; where that fails too, no audio
        for attempt in (audio, "aac" if audio else None, None) if audio else (None,):
            try:
                self._start(info, timescale, attempt)
                break
            except (av.FFmpegError, OSError) as exc:
                self._abandon()
                error = exc
                if attempt is None:
                    raise SinkError(f"cannot write {self.path}: {describe_os_error(exc)}") from None
        if audio and error is not None and self._audio is None:
            self.warnings.append(
                f"{self.path.name}: input audio cannot go into MP4 ({describe_os_error(error)}); "
                "written without audio"
            )
        if self._audio is not None and self._audio.note:
            self.warnings.append(f"{self.path.name}: {self._audio.note}")

    def _start(self, info: SourceInfo, timescale: int, audio: str | None) -> None:
        """Create the MP4 with its H.264 stream (and the input's audio) and write its header."""
        self._audio = None
        gop = max(1, round(info.fps * self.keyframe_s)) if info.fps > 0 else 30
        options = {**MP4_OPTIONS, "video_track_timescale": str(timescale),
                   "movie_timescale": str(timescale)}
        # our own file object: FFmpeg drops the error of its last writes (a fragment flushed at
        # close onto a full disk or /dev/full), Python's raises it
        self._file = open(self.path, "wb", buffering=0)  # noqa: SIM115
        self._out = av.open(self._file, "w", format="mp4", options=options)
        stream = self._out.add_stream(
            self.codec,
            rate=Fraction(info.fps).limit_denominator(1001) if info.fps > 0 else None,
            options={
                "preset": self.preset,
                "tune": "zerolatency",
                "crf": str(self.crf),
                "x264-params": f"keyint={gop}:min-keyint={gop}:scenecut=0:bframes=0",
            },
        )
        stream.width, stream.height = self._size_wh
        stream.pix_fmt = "yuv420p"
        stream.time_base = self._clock.time_base
        stream.codec_context.time_base = self._clock.time_base
        self._stream = stream
        if audio is not None:
            self._add_audio(info.path, transcode=audio == "aac")
        self._out.start_encoding()

    def _add_audio(self, input_path: str, *, transcode: bool) -> None:
        """Add the input's first audio stream; raises ValueError where MP4 cannot hold it."""
        try:
            self._audio = AudioTrack(input_path, self._out, transcode=transcode)
        except LookupError:
            return  # no audio to copy
        except (av.FFmpegError, OSError):
            return  # the source opened it; if it is gone now, there is simply no audio
        except ValueError as exc:
            raise OSError(str(exc)) from None  # the next attempt transcodes

    def _write(self, frame: Frame) -> None:
        image = frame.rendered if frame.rendered is not None else frame.image
        image = self._fit(image)
        vf = av.VideoFrame.from_ndarray(image, format="bgr24")
        vf.pts, vf.time_base = self._clock(frame), self._clock.time_base
        self._mux(self._stream.encode(vf))
        self._last_s = self._clock.seconds(frame)
        if self._audio is not None:
            self._audio.until(self._last_s + AUDIO_LEAD_S, self._mux)

    def _fit(self, image: np.ndarray) -> np.ndarray:
        """Pad odd sides by repeating the last row/column; resize a frame of another size."""
        h, w = image.shape[:2]
        out_w, out_h = self._size_wh
        if (w + w % 2, h + h % 2) != (out_w, out_h):
            if not any("resized" in note for note in self.warnings):
                self.warnings.append(
                    f"{self.path.name}: frames of {w}×{h} resized to the "
                    f"{out_w}×{out_h} the file was opened with"
                )
            return cv2.resize(image, (out_w, out_h), interpolation=cv2.INTER_AREA)
        if (w, h) != (out_w, out_h):
            image = cv2.copyMakeBorder(image, 0, out_h - h, 0, out_w - w, cv2.BORDER_REPLICATE)
        return image

    def _mux(self, packets) -> None:
        try:
            self._out.mux(packets)
        except av.FFmpegError as exc:
            if isinstance(exc, OSError):
                raise
            raise OSError(f"muxing failed: {exc}") from None

    def _close(self) -> None:
        try:
            if self._failed is None and self._out is not None:
                self._mux(self._stream.encode(None))  # flush: every frame in, every frame out
                if self._audio is not None:
                    # the whole input went through: its audio to the end (Matroska, WebM, TS
                    # state no frame count, so the pipeline says so); stopped early: only as
                    # far as the video goes
                    whole = self.input_complete or self.written >= (
                        self._info.frame_count or float("inf"))
                    self._audio.until(None if whole else self._last_s + AUDIO_LEAD_S, self._mux)
                self._out.close()
                self._out = None
                self._file.close()
                self._check_written()
        except av.FFmpegError as exc:
            raise exc if isinstance(exc, OSError) else OSError(str(exc)) from None
        except OSError:
            self._abandon()
            if self._broken is None:
                self._broken = self._held = self._playable()
            raise
        finally:
            self._abandon()
        if note := self._clock.retime_note(self.path.name):
            self.warnings.append(note)

    def _check_written(self) -> None:
        """Read the file back: every frame given to the muxer must be in it, and the audio.

        Raises:
            OSError: the file holds fewer frames (or no audio where audio was muxed).
        """
        want_audio = self.audio_packets
        frames, audio_packets = self._count_written()
        if frames != self.written:
            self._broken = f"{frames} of {self.written} frames can be played"
            raise OSError(
                f"the muxer wrote {frames} of {self.written} frames (FFmpeg refused part of it)"
            )
        if want_audio and not audio_packets:
            self._broken = "its video plays, without the audio"
            raise OSError(f"the muxer dropped the audio ({want_audio} packets muxed, none kept)")

    def _playable(self) -> str:
        """After a write failure: how much of the file plays."""
        frames = self._count_written()[0] if self.path.is_file() else 0
        return f"{frames} of {self.written} frames can be played"

    def _count_written(self) -> tuple[int, int]:
        """(video frames, audio packets) the file on disk holds."""
        try:
            with av.open(str(self.path)) as written:
                video = written.streams.video[0] if written.streams.video else None
                audio = written.streams.audio[0] if written.streams.audio else None
                frames = audio_packets = 0
                for packet in written.demux():
                    if packet.size and video is not None and packet.stream_index == video.index:
                        frames += 1
                    elif packet.size and audio is not None and packet.stream_index == audio.index:
                        audio_packets += 1
        except av.FFmpegError:
            frames = audio_packets = 0  # not even a header a player can read
        return frames, audio_packets

    def _incomplete_note(self) -> str:
        if self._held:
            return f"the file is incomplete: {self._held}"
        if self._broken:
            return f"the file is broken: {self._broken}"
        return (
            f"the file is incomplete ({self.written} frames written) and plays up to its "
            "last complete fragment"
        )

    def _abandon(self) -> None:
        """Close whatever is open without finalising more (after an error)."""
        if self._out is not None:
            try:
                self._out.close()
            except (av.FFmpegError, OSError):
                pass
        if self._audio is not None:
            self._audio.close()
        if self._file is not None:
            try:
                self._file.close()
            except OSError:
                pass  # the write error already raised is the one to report
        self._out = self._file = None


class MaskVideoSink(Sink):
    """``--mask-video PATH``: the masks (0/255 grey) as lossless FFV1 in Matroska.

    Matroska stores milliseconds, so PTS are the input's rounded to 1 ms (strictly increasing).
    """

    name = "mask video"
    TIME_BASE = Fraction(1, 1000)

    def __init__(self, path) -> None:
        super().__init__(path)
        self._out = self._stream = None

    def _open(self, info: SourceInfo) -> None:
        check_output_file(self.path, info, what="mask video")
        if self.path.suffix.lower() != ".mkv":
            self.warnings.append(f"{self.path.name}: written as Matroska whatever its extension")
        self._clock = PtsClock(self.TIME_BASE)
        try:
            self._out = av.open(str(self.path), "w", format="matroska", options=MKV_OPTIONS)
            stream = self._out.add_stream(
                "ffv1", rate=Fraction(info.fps).limit_denominator(1001) if info.fps > 0 else None
            )
            stream.width, stream.height = info.size_wh  # FFV1 takes odd sizes as they are
            self._size_wh = info.size_wh
            stream.pix_fmt = "gray"
            stream.time_base = self.TIME_BASE
            stream.codec_context.time_base = self.TIME_BASE
            self._stream = stream
            self._out.start_encoding()
        except (av.FFmpegError, OSError) as exc:
            if self._out is not None:
                self._out.close()
            raise SinkError(f"cannot write {self.path}: {describe_os_error(exc)}") from None

    def _write(self, frame: Frame) -> None:
        if frame.mask is None:
            raise ValueError(f"frame {frame.index} reached the mask video without a mask")
        vf = av.VideoFrame.from_ndarray(self._fit(mask_255(frame.mask)), format="gray")
        vf.pts, vf.time_base = self._clock(frame), self.TIME_BASE
        try:
            self._out.mux(self._stream.encode(vf))
        except av.FFmpegError as exc:
            raise exc if isinstance(exc, OSError) else OSError(str(exc)) from None

    def _fit(self, mask: np.ndarray) -> np.ndarray:
        """A mask of another size (the input changed resolution) to the file's, still 0/255.

        Left to the encoder, FFmpeg's scaler would interpolate and write grey edges; nearest
        neighbour keeps every pixel a mask value.
        """
        h, w = mask.shape[:2]
        out_w, out_h = self._size_wh
        if (w, h) == (out_w, out_h):
            return mask
        if not any("resized" in note for note in self.warnings):
            self.warnings.append(
                f"{self.path.name}: masks of {w}×{h} resized (nearest neighbour, still 0/255) "
                f"to the {out_w}×{out_h} the file was opened with; --mask-dir keeps each "
                "frame's size"
            )
        return cv2.resize(mask, (out_w, out_h), interpolation=cv2.INTER_NEAREST)

    def _close(self) -> None:
        try:
            if self._failed is None:
                self._out.mux(self._stream.encode(None))
            self._out.close()
        except av.FFmpegError as exc:
            raise exc if isinstance(exc, OSError) else OSError(str(exc)) from None
        if note := self._clock.retime_note(self.path.name):
            self.warnings.append(note)


def mask_255(mask: np.ndarray) -> np.ndarray:
    """H×W {0,1} (or bool, or already 0/255) → contiguous H×W uint8 {0,255}."""
    return np.where(mask > 0, np.uint8(255), np.uint8(0))
