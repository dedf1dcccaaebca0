"""The input's audio in the output MP4: copied packet for packet, or transcoded to AAC.

Copying keeps the audio bit for bit. Two things stop it: MP4 cannot hold the codec (μ-law and
unsigned PCM, ADPCM, WMA), or the stream states a channel count without a layout (capture
cards' stereo PCM in AVI or Matroska), which FFmpeg's MP4 muxer rejects while writing fragments
without raising: the file would hold no video at all. The first gets AAC (the note says so),
the second the standard layout for its channel count.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from fractions import Fraction

import av
from av.bitstream import BitStreamFilterContext

# FFmpeg's default layout per channel count (av_channel_layout_default)
STANDARD_LAYOUTS = {1: "mono", 2: "stereo", 3: "2.1", 4: "4.0", 5: "5.0", 6: "5.1", 7: "6.1",
                    8: "7.1"}
AAC_RATES = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000,
             7350)


class AudioTrack:
    """One input audio stream going into an output container, in step with the video.

    Args:
        input_path: the input file (opened again here, with its own reader).
        out: the output container, before its header is written.
        transcode: encode AAC instead of copying packets.

    Attributes:
        packets: audio packets muxed so far.
        note: a one-line note for the user (the transcoding, a layout set), or None.

    Raises:
        LookupError: the input has no audio stream.
        ValueError: copying was asked and the output cannot hold the codec.
        av.FFmpegError, OSError: the input cannot be read again.
    """

    def __init__(self, input_path: str, out, *, transcode: bool) -> None:
        self.packets = 0
        self.note: str | None = None
        self._source = av.open(input_path, metadata_errors="ignore")
        try:
            if not self._source.streams.audio:
                raise LookupError("no audio stream")
            audio = self._source.streams.audio[0]
            codec = audio.codec_context.name
            layout = _standard_layout(audio.codec_context)
            if transcode:
                self._start_aac(out, audio, layout)
                self.note = f"input audio ({codec}) transcoded to AAC, which MP4 can hold"
            else:
                if codec not in out.supported_codecs:
                    raise ValueError(f"MP4 cannot hold {codec} audio")
                self._start_copy(out, audio, input_path, layout)
        except BaseException:
            self._source.close()
            raise
        self._packets: Iterator[av.Packet] | None = self._source.demux(audio)
        self._pending: av.Packet | None = None

    def _start_copy(self, out, audio, input_path: str, layout: str | None) -> None:
        self.stream = out.add_stream_from_template(audio)
        if layout is not None:
            # a count without a layout: FFmpeg's MP4 muxer rejects it (silently, in fragments)
            self.stream.codec_context.layout = layout
        self._encoder = None
        self._adts = None
        if audio.codec_context.name == "aac" and not audio.codec_context.extradata:
            # ADTS AAC (MPEG-TS, raw .aac): MP4 wants the AudioSpecificConfig up front and
            # bare frames, which FFmpeg's automatic filter does not give a fragmented MP4
            self.stream.codec_context.extradata = adts_config(input_path)
            self._adts = BitStreamFilterContext("aac_adtstoasc", audio)

    def _start_aac(self, out, audio, layout: str | None) -> None:
        ctx = audio.codec_context
        rate = min(AAC_RATES, key=lambda r: abs(r - (ctx.sample_rate or 48000)))
        layout = layout or ctx.layout.name
        if ctx.channels > 8:
            layout = "7.1"
        self.stream = out.add_stream("aac", rate=rate, layout=layout)
        self.stream.time_base = Fraction(1, rate)
        self._encoder = av.AudioResampler(format="fltp", layout=layout, rate=rate)
        self._adts = None

    def until(self, seconds: float | None, mux: Callable) -> None:
        """Mux input audio whose time is before ``seconds`` (None: all that is left)."""
        while self._packets is not None:
            packet, self._pending = self._pending, None
            if packet is None:
                try:
                    packet = next(self._packets, None)
                except av.FFmpegError:
                    continue  # a damaged audio packet is skipped, like a damaged video one
                if packet is None:
                    self._packets = None
                    break
            if packet.dts is None:
                continue  # the demuxer's flush packet
            if seconds is not None and packet.pts is not None:
                if float(packet.pts * packet.time_base) > seconds:
                    self._pending = packet
                    return
            self._mux(packet, mux)
        if seconds is None and self._encoder is not None:
            self._flush_aac(mux)

    def _mux(self, packet: av.Packet, mux: Callable) -> None:
        if self._encoder is None:
            for out in self._adts.filter(packet) if self._adts else (packet,):
                out.stream = self.stream
                mux(out)
                self.packets += 1
            return
        try:
            frames = packet.decode()
        except av.FFmpegError:
            return  # undecodable audio: skipped, like a damaged copied packet
        for frame in frames:
            for resampled in self._encoder.resample(frame):
                self._mux_encoded(self.stream.encode(resampled), mux)

    def _flush_aac(self, mux: Callable) -> None:
        for resampled in self._encoder.resample(None):
            self._mux_encoded(self.stream.encode(resampled), mux)
        self._mux_encoded(self.stream.encode(None), mux)
        self._encoder = None

    def _mux_encoded(self, packets: list[av.Packet], mux: Callable) -> None:
        mux(packets)
        self.packets += len(packets)

    def close(self) -> None:
        """Release the input reader (idempotent)."""
        try:
            self._source.close()
        except (av.FFmpegError, OSError):
            pass
        self._packets = None


def _standard_layout(ctx) -> str | None:
    """The standard layout for a stream that states only its channel count, else None."""
    name = ctx.layout.name
    if name.endswith(("channel", "channels")) and name.split()[0].isdigit():
        return STANDARD_LAYOUTS.get(ctx.channels)
    return None


def adts_config(path: str) -> bytes:
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
