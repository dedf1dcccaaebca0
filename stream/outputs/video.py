"""Video file sinks: the rendered overlay as H.264 MP4, the masks as lossless FFV1 MKV.

The MP4 keeps the input's timing exactly: its video stream uses the source's time base and
every frame is muxed with the input PTS (variable frame rate stays variable; camera frames get
PTS from their capture times). The input's audio packets are copied without re-encoding. The
file is fragmented (one fragment per keyframe, a keyframe per second), so a process killed
mid-run leaves a file that plays up to its last complete fragment. libx264 runs with
``tune=zerolatency`` and no B-frames: each frame comes out as it goes in, nothing is reordered
or held back, and the frame count always matches.
"""

from __future__ import annotations

from fractions import Fraction

import av
import cv2
import numpy as np
from av.bitstream import BitStreamFilterContext

from stream.errors import SinkError
from stream.frame import Frame, SourceInfo
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
        copy_audio: copy the input's first audio stream, when it has one.
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
        self.audio_packets = 0
        self._out = self._stream = None
        self._audio_in = self._audio_out = None
        self._audio_packets = None
        self._pending_audio = None
        self._adts = None
        self._last_s = 0.0

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
        self._clock = PtsClock(info.time_base)
        audio_from = info.path if self.copy_audio else None
        try:
            self._start(info, audio_from)
        except (av.FFmpegError, OSError) as exc:
            self._abandon()
            if self._audio_out is None:
                raise SinkError(f"cannot write {self.path}: {describe_os_error(exc)}") from None
            # the muxer refused the audio stream: the video alone is still worth having
            self.warnings.append(
                f"{self.path.name}: input audio cannot be copied ({describe_os_error(exc)}); "
                "written without audio"
            )
            self._audio_out = None
            try:
                self._start(info, None)
            except (av.FFmpegError, OSError) as exc2:
                self._abandon()
                raise SinkError(f"cannot write {self.path}: {describe_os_error(exc2)}") from None

    def _start(self, info: SourceInfo, audio_from: str | None) -> None:
        """Create the MP4 with its H.264 stream (and the copied audio) and write its header."""
        gop = max(1, round(info.fps * self.keyframe_s)) if info.fps > 0 else 30
        self._out = av.open(str(self.path), "w", format="mp4", options=dict(MP4_OPTIONS))
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
        stream.time_base = info.time_base
        stream.codec_context.time_base = info.time_base
        self._stream = stream
        if audio_from:
            self._add_audio(audio_from)
        self._out.start_encoding()

    def _add_audio(self, input_path: str) -> None:
        """Copy the input's first audio stream, or say why not."""
        try:
            source = av.open(input_path)
        except (av.FFmpegError, OSError):
            return  # the source opened it; if it is gone now, there is simply no audio
        if not source.streams.audio:
            source.close()
            return
        audio = source.streams.audio[0]
        codec = audio.codec_context.name
        if codec not in self._out.supported_codecs:
            self.warnings.append(
                f"{self.path.name}: input audio ({codec}) cannot go into MP4; written without audio"
            )
            source.close()
            return
        self._audio_in = source
        self._audio_out = self._out.add_stream_from_template(audio)
        self._audio_packets = source.demux(audio)
        self._adts = None
        if codec == "aac" and not audio.codec_context.extradata:
            # ADTS AAC (MPEG-TS, raw .aac): MP4 wants the AudioSpecificConfig up front and
            # bare frames, which FFmpeg's automatic filter does not give a fragmented MP4
            self._audio_out.codec_context.extradata = _adts_config(input_path)
            self._adts = BitStreamFilterContext("aac_adtstoasc", audio)

    def _write(self, frame: Frame) -> None:
        image = frame.rendered if frame.rendered is not None else frame.image
        image = self._fit(image)
        vf = av.VideoFrame.from_ndarray(image, format="bgr24")
        vf.pts, vf.time_base = self._clock(frame), self._clock.time_base
        self._mux(self._stream.encode(vf))
        self._last_s = self._clock.seconds(frame)
        if self._audio_packets is not None:
            self._copy_audio_until(self._last_s + AUDIO_LEAD_S)

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

    def _copy_audio_until(self, seconds: float | None) -> None:
        """Remux input audio packets whose time is before ``seconds`` (None: all that is left)."""
        while True:
            packet = self._pending_audio
            self._pending_audio = None
            if packet is None:
                try:
                    packet = next(self._audio_packets, None)
                except av.FFmpegError:
                    continue  # a damaged audio packet is skipped, like a damaged video one
                if packet is None:
                    self._audio_packets = None
                    return
            if packet.dts is None:
                continue  # the demuxer's flush packet
            if seconds is not None and packet.pts is not None:
                if float(packet.pts * packet.time_base) > seconds:
                    self._pending_audio = packet
                    return
            for out in self._adts.filter(packet) if self._adts else (packet,):
                out.stream = self._audio_out
                self._mux(out)
                self.audio_packets += 1

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
                if self._audio_packets is not None:
                    # the whole input went through: copy its audio to the end; stopped early:
                    # only as far as the video goes
                    whole = self.written >= (self._info.frame_count or float("inf"))
                    self._copy_audio_until(None if whole else self._last_s + AUDIO_LEAD_S)
                self._out.close()
        except av.FFmpegError as exc:
            raise exc if isinstance(exc, OSError) else OSError(str(exc)) from None
        finally:
            self._abandon()
        if self._clock.retimed:
            self.warnings.append(
                f"{self.path.name}: {self._clock.retimed} frames had "
                "non-increasing timestamps and were moved one tick later"
            )

    def _incomplete_note(self) -> str:
        return (
            f"the file is incomplete ({self.written} frames written) and plays up to its "
            "last complete fragment"
        )

    def _abandon(self) -> None:
        """Close whatever is open without finalising more (after an error)."""
        for container in (self._out, self._audio_in):
            if container is not None:
                try:
                    container.close()
                except (av.FFmpegError, OSError):
                    pass
        self._out = self._audio_in = None
        self._audio_packets = None


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
        vf = av.VideoFrame.from_ndarray(mask_255(frame.mask), format="gray")
        vf.pts, vf.time_base = self._clock(frame), self.TIME_BASE
        try:
            self._out.mux(self._stream.encode(vf))
        except av.FFmpegError as exc:
            raise exc if isinstance(exc, OSError) else OSError(str(exc)) from None

    def _close(self) -> None:
        try:
            if self._failed is None:
                self._out.mux(self._stream.encode(None))
            self._out.close()
        except av.FFmpegError as exc:
            raise exc if isinstance(exc, OSError) else OSError(str(exc)) from None


def _adts_config(path: str) -> bytes:
    """The 2-byte AudioSpecificConfig of the first ADTS frame of ``path``'s audio stream.

    Raises:
        OSError: the stream does not start with an ADTS header.
    """
    with av.open(path) as container:
        for packet in container.demux(container.streams.audio[0]):
            head = bytes(packet)[:4]
            if len(head) < 4:
                continue
            if head[0] != 0xFF or head[1] & 0xF0 != 0xF0:
                break
            profile, rate_index = (head[2] >> 6) & 3, (head[2] >> 2) & 15
            channels = ((head[2] & 1) << 2) | (head[3] >> 6)
            return ((profile + 1) << 11 | rate_index << 7 | channels << 3).to_bytes(2, "big")
    raise OSError("AAC audio without a configuration or ADTS headers")


def mask_255(mask: np.ndarray) -> np.ndarray:
    """H×W {0,1} (or bool, or already 0/255) → contiguous H×W uint8 {0,255}."""
    return np.where(mask > 0, np.uint8(255), np.uint8(0))
