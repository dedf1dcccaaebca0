"""Sinks on real encoded files: timing, audio, masks and CSV (failures: test_sink_errors.py)."""

import csv
import threading
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
import pytest
from support.media import (
    audio_seconds,
    decode_video,
    probe,
    read_index,
    synthetic_frame,
    vfr_pts,
    write_clip,
)

from stream.frame import Frame, SourceInfo
from stream.outputs import CsvSink, MaskDirSink, MaskVideoSink, VideoSink, lesion_stats, open_sinks
from stream.outputs.base import PtsClock
from stream.queues import EOS
from stream.sources import open_source

INFO = SourceInfo("file:x", (160, 120), 25.0, Fraction(1, 12800))  # a 25 fps file's stream


def lesion_mask(image: np.ndarray) -> np.ndarray:
    """A real, content-dependent H×W {0,1} mask: the dark disc below the index bar."""
    mask = (cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) < 100).astype(np.uint8)
    mask[:10] = 0
    return mask


def run_through_sinks(path: Path, out: Path):
    """Read ``path`` with a real source, mask and render each frame, write all four sinks."""
    source = open_source(str(path))
    sinks = open_sinks(
        source.info,
        output=out / "out.mp4",
        mask_dir=out / "masks",
        mask_video=out / "masks.mkv",
        csv_path=out / "frames.csv",
    )
    stop = threading.Event()
    source.start(stop)
    frames = []
    while (frame := source.queue.get(stop, timeout=20)) is not EOS:
        frame.mask = lesion_mask(frame.image)
        frame.rendered = frame.image.copy()
        frame.rendered[frame.mask > 0] = (0, 255, 0)
        frame.timings["infer"] = 1.5
        for sink in sinks:
            sink.write(frame)
        frames.append(frame)
    for sink in sinks:
        sink.close()
        sink.close()  # closing twice is safe
    assert source.join(5) and source.error is None
    return source, sinks, frames


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


CLIPS = {  # name → (file name, write_clip arguments)
    "cfr": ("in.mp4", {"frames": 30}),
    "vfr": ("in.mp4", {"pts": vfr_pts(30)}),
    "bframes-audio": ("in.mp4", {"frames": 30, "bframes": 2, "audio": True}),
    "mpegts-audio": ("in.ts", {"frames": 30, "audio": True}),  # 90 kHz, starts > 0, ADTS AAC
    "odd-size": ("in.mkv", {"frames": 30, "size_wh": (161, 121), "codec": "ffv1"}),
}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("kind", list(CLIPS))
def test_file_in_gives_complete_outputs_with_the_input_timing(tmp_path, kind):
    # given a real clip of one kind
    name, options = CLIPS[kind]
    clip = write_clip(tmp_path / name, **options)
    out = tmp_path / "out"
    out.mkdir()
    # when it goes through source → mask → every sink
    _, sinks, frames = run_through_sinks(clip.path, out)
    # then the video has exactly the input's frames at exactly the input's times
    assert len(frames) == clip.frame_count == 30
    video = probe(out / "out.mp4")
    assert video.codec == "h264" and video.pix_fmt == "yuv420p"
    assert video.pts_seconds == clip.pts_seconds
    decoded = decode_video(out / "out.mp4")
    assert [read_index(img) for _, img in decoded] == list(range(30))
    assert [p for p, _ in decoded] == list(video.video_pts)
    # a VFR input stays VFR
    durations = {b - a for a, b in zip(video.pts_seconds, video.pts_seconds[1:], strict=False)}
    assert (len(durations) > 2) == (kind == "vfr")
    # audio is copied packet for packet
    if clip.audio:
        source_audio = probe(clip.path)
        assert video.audio_codec == "aac"
        assert video.audio_packets == source_audio.audio_packets > 0
        assert video.audio_seconds == source_audio.audio_seconds
    # odd sizes are padded for yuv420p, and the user is told
    w, h = clip.size_wh
    assert video.size_wh == (w + w % 2, h + h % 2)
    assert any("padded" in note for note in sinks[0].warnings) == (w % 2 == 1)
    # one 0/255 PNG per frame at the frame's size, equal to the mask given
    pngs = sorted((out / "masks").glob("frame_*.png"))
    assert [p.name for p in pngs] == [f"frame_{i:06d}.png" for i in range(30)]
    for frame, png in zip(frames, pngs, strict=True):
        saved = cv2.imread(str(png), cv2.IMREAD_UNCHANGED)
        assert saved.shape == (h, w) and set(np.unique(saved)) <= {0, 255}
        assert np.array_equal(saved > 0, frame.mask > 0)
    # the mask video is lossless grey at the frame size, one frame per input frame
    mask_video = decode_video(out / "masks.mkv", fmt="gray")
    assert probe(out / "masks.mkv").codec == "ffv1"
    assert len(mask_video) == 30
    for frame, (_, img) in zip(frames, mask_video, strict=True):
        assert np.array_equal(img, frame.mask * 255)
    # the CSV has a row per frame with the mask's numbers and the stage times
    rows = read_csv(out / "frames.csv")
    assert [int(r["index"]) for r in rows] == list(range(30))
    for frame, row in zip(frames, rows, strict=True):
        assert float(row["pts_s"]) == pytest.approx(float(frame.pts * frame.time_base), abs=1e-6)
        assert int(row["area_px"]) == int(frame.mask.sum())
        assert float(row["area_frac"]) == pytest.approx(frame.mask.mean(), abs=1e-6)
        assert float(row["ms_infer"]) == 1.5 and float(row["ms_decode"]) >= 0
        assert row["ms_capture"] == ""


@pytest.mark.timeout(60)
def test_csv_box_and_centroid_of_known_masks(tmp_path):
    # given a rectangle and an empty mask
    mask = np.zeros((50, 80), np.uint8)
    mask[10:20, 30:70] = 1
    # then the numbers are those of the rectangle, and empty for no lesion
    assert lesion_stats(mask) == [400, "0.100000", 30, 10, 40, 10, "49.50", "14.50"]
    assert lesion_stats(np.zeros((4, 4), np.uint8)) == [0, "0.000000", "", "", "", "", "", ""]


def _frame(i: int, pts: int | None, capture_time: float, tb=Fraction(1, 12800)) -> Frame:
    image = synthetic_frame(i)
    return Frame(
        image=image,
        index=i,
        pts=pts,
        time_base=tb,
        capture_time=capture_time,
        mask=lesion_mask(image),
    )


@pytest.mark.timeout(60)
def test_camera_frames_get_timestamps_from_capture_times(tmp_path):
    # given live frames without PTS, captured at uneven times, two at the same instant
    info = SourceInfo("camera:0", (160, 120), 30.0, Fraction(1, 1000), live=True)
    times = [100.0, 100.033, 100.1, 100.1, 100.2]
    sink, csv_sink = VideoSink(tmp_path / "cam.mp4"), CsvSink(tmp_path / "cam.csv")
    for s in (sink, csv_sink):
        s.open(info)
    # when written
    for i, t in enumerate(times):
        frame = _frame(i, None, t, tb=info.time_base)
        sink.write(frame)
        csv_sink.write(frame)
    sink.close()
    csv_sink.close()
    # then the file's times follow the capture times, strictly increasing, and nothing is lost
    seconds = [float(s) for s in probe(tmp_path / "cam.mp4").pts_seconds]
    assert seconds == pytest.approx([0.0, 0.033, 0.1, 0.101, 0.2], abs=1e-6)
    assert any(note.endswith("moved later to keep them in order, by up to 1 ms")
               for note in sink.warnings)
    assert [float(r["pts_s"]) for r in read_csv(tmp_path / "cam.csv")] == pytest.approx(
        [0.0, 0.033, 0.1, 0.1, 0.2], abs=1e-6
    )


def test_pts_clock_rescales_and_never_goes_backwards():
    clock = PtsClock(Fraction(1, 1000))
    assert clock(_frame(0, 512, 0.0)) == 40  # 512/12800 s = 40 ms
    assert clock(_frame(1, 512, 0.0)) == 41
    assert clock(_frame(2, 1280, 0.0)) == 100
    assert clock.retimed == 1


@pytest.mark.timeout(60)
def test_close_is_idempotent_and_write_after_close_is_refused(tmp_path):

    for sink in (
        VideoSink(tmp_path / "a.mp4"),
        MaskVideoSink(tmp_path / "a.mkv"),
        MaskDirSink(tmp_path / "m"),
        CsvSink(tmp_path / "a.csv"),
    ):
        never_opened = type(sink)(sink.path)
        never_opened.close()  # nothing to do, and no file is made
        assert not sink.path.exists()
        sink.open(INFO)
        sink.write(_frame(0, 0, 0.0))
        sink.close()
        sink.close()
        assert sink.written == 1
        with pytest.raises(RuntimeError):
            sink.write(_frame(1, 512, 0.0))
    assert len(decode_video(tmp_path / "a.mp4")) == 1
    assert len(decode_video(tmp_path / "a.mkv")) == 1


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("name", "codec", "copied"),
    [("pcm.mkv", "pcm_s16le", True), ("ulaw.mov", "pcm_mulaw", False)],
)
def test_audio_is_copied_when_mp4_can_hold_it_and_transcoded_to_aac_otherwise(
    tmp_path, name, codec, copied
):
    # given a clip whose audio is PCM (MP4 holds it) or µ-law (MP4 cannot)
    clip = write_clip(tmp_path / name, frames=12, audio=True, audio_codec=codec)
    assert probe(clip.path).audio_codec == codec
    out = tmp_path / "out"
    out.mkdir()
    # when it is written to MP4
    _, sinks, frames = run_through_sinks(clip.path, out)
    # then the video is complete either way, and the audio is copied, or AAC with a note
    result = probe(out / "out.mp4")
    assert result.pts_seconds == clip.pts_seconds
    if copied:
        assert result.audio_codec == codec
        assert result.audio_packets == probe(clip.path).audio_packets
    else:
        assert result.audio_codec == "aac"
        assert any("transcoded to AAC" in note for note in sinks[0].warnings)
        # as long as the input's audio, to one AAC frame (1024 samples at 16 kHz)
        want, got = audio_seconds(clip.path), audio_seconds(out / "out.mp4")
        assert abs(got - want) <= Fraction(1024, 16000)


@pytest.mark.timeout(60)
def test_stopping_early_copies_audio_only_as_far_as_the_video(tmp_path):
    # given a 2 s clip with audio, of which only the first 10 frames (0.4 s) are written
    clip = write_clip(tmp_path / "in.mp4", frames=50, audio=True)
    source = open_source(str(clip.path))
    sink = VideoSink(tmp_path / "out.mp4")
    sink.open(source.info)
    stop = threading.Event()
    source.start(stop)
    for _ in range(10):
        sink.write(source.queue.get(stop, timeout=10))
    stop.set()
    assert source.join(5)
    sink.close()
    # then the audio ends about where the video does, not 1.6 s later
    result = probe(tmp_path / "out.mp4")
    assert len(result.video_pts) == 10
    last_audio_s = max(result.audio_seconds)
    assert 0.3 < last_audio_s < 0.4 + 0.5 + 0.07
