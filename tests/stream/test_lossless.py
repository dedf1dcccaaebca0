"""File mode is lossless: every frame in comes out, in order, with its timestamp and the audio.

Each clip is a real file encoded by PyAV (constant and variable frame rate, B-frames, AAC audio
in MP4 and ADTS audio in MPEG-TS, an odd size) and goes through the real CLI with every output.
Each frame carries its index as a bar code (``media.read_index``), so the test knows not only
how many frames came out but which; the weights are a real file of a generator that finds no
lesion, so nothing is drawn over the bar code.
"""

import csv
from fractions import Fraction

import cv2
import pytest
from support.media import decode_video, probe, read_index, vfr_pts, write_clip
from support.nets import save_no_lesion
from support.reliability import run_cli

SIZE_WH = (96, 64)

CLIPS = {
    "cfr-aac-audio": dict(frames=6, audio=True),
    "vfr": dict(pts=vfr_pts(7)),
    "b-frames": dict(frames=8, bframes=2),
    "mpegts-adts-audio-b-frames": dict(frames=6, audio=True, bframes=2,
                                       container_format="mpegts"),
    "odd-size-ffv1": dict(frames=5, size_wh=(97, 63), codec="ffv1"),
}
EXTENSIONS = {"mpegts-adts-audio-b-frames": "ts", "odd-size-ffv1": "mkv"}


@pytest.fixture(scope="module")
def no_lesion(tmp_path_factory):
    """Weights of a generator whose every probability is ~0 (head bias -10)."""
    return save_no_lesion(tmp_path_factory.mktemp("w") / "no_lesion.pt")


@pytest.mark.timeout(180)
@pytest.mark.parametrize("kind", list(CLIPS))
def test_every_frame_comes_out_in_order_with_its_timestamp_and_the_audio(tmp_path, kind,
                                                                        no_lesion):
    # given a real clip
    options = {"size_wh": SIZE_WH, **CLIPS[kind]}
    clip = write_clip(tmp_path / f"in.{EXTENSIONS.get(kind, 'mp4')}", **options)
    n = clip.frame_count
    out = {"video": tmp_path / "o.mp4", "masks": tmp_path / "masks",
           "mask_video": tmp_path / "m.mkv", "csv": tmp_path / "o.csv"}
    # when the demo processes it into every output (batches of 3 for the VFR clip: the last
    # batch is partial)
    batch = ["--batch", "3"] if kind == "vfr" else []
    run = run_cli("--video", clip.path, "--output", out["video"], "--mask-dir", out["masks"],
                  "--mask-video", out["mask_video"], "--csv", out["csv"], "--no-hud",
                  "--weights", no_lesion, *batch)
    # then frames in == frames out == the clip's frames
    assert run.rc == 0, run.stderr
    assert run.counts() == (n, n)
    # and the video holds the same frames in the same order with the same timestamps
    video = probe(out["video"])
    assert video.pts_seconds == clip.pts_seconds
    decoded = decode_video(out["video"])
    assert [read_index(image) for _, image in decoded] == list(range(n))
    w, h = clip.size_wh
    assert decoded[0][1].shape[:2] == (h + h % 2, w + w % 2)
    # and the audio is all there, at its own times
    if clip.audio:
        source = probe(clip.path)
        assert video.audio_packets == source.audio_packets > 0
        assert video.audio_seconds[0] == source.audio_seconds[0]
        assert video.audio_seconds[-1] == source.audio_seconds[-1]
    # and the mask outputs and the CSV have one entry per frame at the frame's time
    masks = probe(out["mask_video"])
    assert masks.size_wh == clip.size_wh and len(masks.video_pts) == n
    for got, want in zip(masks.pts_seconds, clip.pts_seconds, strict=True):
        assert abs(got - want) <= Fraction(1, 1000)  # Matroska keeps milliseconds
    pngs = sorted(out["masks"].glob("frame_*.png"))
    assert [p.name for p in pngs] == [f"frame_{i:06d}.png" for i in range(n)]
    assert cv2.imread(str(pngs[-1]), cv2.IMREAD_UNCHANGED).shape == (h, w)
    with open(out["csv"], newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["index"]) for r in rows] == list(range(n))
    for row, want in zip(rows, clip.pts_seconds, strict=True):
        assert abs(float(row["pts_s"]) - float(want)) < 1e-6


@pytest.mark.timeout(180)
def test_max_frames_stops_exactly_there(tmp_path, no_lesion):
    clip = write_clip(tmp_path / "in.mp4", frames=8, size_wh=SIZE_WH, audio=True)
    run = run_cli("--video", clip.path, "--output", tmp_path / "o.mp4", "--max-frames", "3",
                  "--no-hud", "--weights", no_lesion)
    assert run.rc == 0, run.stderr
    assert run.counts() == (3, 3)
    decoded = decode_video(tmp_path / "o.mp4")
    assert [p for p, _ in decoded] == list(clip.pts[:3])
    assert [read_index(image) for _, image in decoded] == [0, 1, 2]
