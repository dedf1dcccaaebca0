"""stream.synth: sweeps whose truth masks follow the lesion, the CLI, and the bundled sample."""

import math
import subprocess
import sys
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from stream.bench.synth import MOTIONS, Pose, sweep, synthetic_still, view_matrix

ROOT = Path(__file__).resolve().parents[3]
SAMPLE = ROOT / "stream" / "assets" / "sample.mp4"


@pytest.fixture(scope="module")
def still():
    return synthetic_still((256, 256), seed=3)


def centroid(mask: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(mask)
    return np.array([xs.mean(), ys.mean()])


def test_view_matrix_at_zoom_one_maps_the_frame_onto_the_whole_still():
    # given a centred, unrotated pose at zoom 1
    m = view_matrix(Pose(0.5, 0.5, 1.0, 0.0), (256, 200), (640, 480))
    # then the output corners land on the still's corners
    corners = np.array([[0, 0, 1], [640, 0, 1], [0, 480, 1], [640, 480, 1]], float).T
    np.testing.assert_allclose((m @ corners).T, [[0, 0], [256, 0], [0, 200], [256, 200]], atol=1e-9)


def test_rotation_is_in_true_proportions_of_the_frame():
    # given a 90° turn of a 4:3 frame over a square still: a circle must stay a circle
    m = view_matrix(Pose(0.5, 0.5, 2.0, 90.0), (256, 256), (640, 480))
    lin = m[:, :2] * np.array([[640 / 256], [480 / 256]])  # back to canvas pixels
    # then the canvas-space map is a pure rotation and scale (orthogonal up to 1/zoom)
    np.testing.assert_allclose(lin @ lin.T, np.eye(2) / 4, atol=1e-9)


@pytest.mark.parametrize("motion", MOTIONS)
def test_every_motion_gives_frames_and_truths_of_the_requested_size(still, motion):
    # when a short clip is rendered
    out = list(sweep(*still, motion=motion, size_wh=(96, 72), fps=30, seconds=0.2, seed=1))
    # then it has fps × seconds frames, BGR uint8 and {0,1} truths of (W, H) = (96, 72)
    assert len(out) == 6
    for frame, truth in out:
        assert frame.shape == (72, 96, 3) and frame.dtype == np.uint8
        assert truth.shape == (72, 96) and set(np.unique(truth)) <= {0, 1}
        assert 0.02 < truth.mean() < 0.9  # the lesion is in view


def test_truth_covers_the_dark_lesion_in_every_frame(still):
    # given a sweep with pan, zoom, rotation, tremor and noise
    out = list(sweep(*still, motion="sweep", size_wh=(160, 120), fps=30, seconds=1.0, seed=2))
    for frame, truth in out:
        grey = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY).astype(float)
        inner = cv2.erode(truth, np.ones((5, 5), np.uint8)).astype(bool)
        outer = ~cv2.dilate(truth, np.ones((5, 5), np.uint8)).astype(bool)
        # then pixels inside the truth are the dark lesion, and outside it the light skin
        assert grey[inner].mean() < grey[outer].mean() - 40


def test_fast_pan_moves_the_lesion_more_per_frame_than_slow_pan(still):
    def steps(motion):
        truths = [
            t for _, t in sweep(*still, motion=motion, size_wh=(320, 240), seconds=1.0, seed=0)
        ]
        c = np.array([centroid(t) for t in truths])
        return np.linalg.norm(np.diff(c, axis=0), axis=1)

    slow, fast = steps("slow_pan"), steps("fast_pan")
    # then a slow pan drifts a few pixels per frame, a fast pan sweeps many
    assert slow.max() < 4
    assert fast.max() > 8 and fast.mean() > 3 * slow.mean()


def test_static_clip_has_a_fixed_truth_but_noisy_frames(still):
    out = list(sweep(*still, motion="static", size_wh=(96, 72), seconds=0.2))
    truths = [t for _, t in out]
    assert all(np.array_equal(truths[0], t) for t in truths)
    # sensor noise: two frames of a still scene still differ
    assert np.abs(out[0][0].astype(int) - out[1][0].astype(int)).mean() > 0.5


def test_the_camera_leans_towards_an_off_centre_lesion(still):
    # given a 256×200 still whose only lesion lies right of and above its centre
    image, _ = still
    image = cv2.resize(image, (256, 200))
    mask = np.zeros((200, 256), np.uint8)
    cv2.circle(mask, (159, 80), 8, 1, -1)  # its centre at 0.62 of the width, 0.40 of the height
    # when a static clip is rendered
    _, truth = next(sweep(image, mask, motion="static", size_wh=(160, 120), seconds=0.1))
    # then the frame shows it on the same side, but nearer the frame's centre than in the still
    shown = centroid(truth) / np.array([160, 120]) - 0.5
    lies = np.array([159 / 256, 80 / 200]) - 0.5
    assert np.all(np.sign(shown) == np.sign(lies))
    assert np.all(np.abs(shown) < 0.75 * np.abs(lies))


def test_flicker_motion_changes_the_light_not_the_geometry(still):
    out = list(sweep(*still, motion="flicker", size_wh=(96, 72), seconds=1.0))
    brightness = np.array([f.mean() for f, _ in out])
    areas = np.array([t.sum() for _, t in out])
    assert brightness.std() / brightness.mean() > 0.05
    assert areas.std() / areas.mean() < 0.05


def test_same_seed_same_clip_other_seed_other_clip(still):
    def first(seed):
        return next(sweep(*still, motion="jitter", size_wh=(64, 48), seconds=0.1, seed=seed))[0]

    assert np.array_equal(first(5), first(5))
    assert not np.array_equal(first(5), first(6))


def run_cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "stream.synth", *map(str, args)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def still_files(tmp_path, still):
    rgb, mask = still
    image, mask_path = tmp_path / "still.png", tmp_path / "still_mask.png"
    cv2.imwrite(str(image), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(mask_path), mask.astype(np.uint8) * 255)
    return image, mask_path


@pytest.mark.timeout(120)
def test_cli_writes_a_playable_clip_and_one_truth_png_per_frame(tmp_path, still_files):
    # when two still/mask pairs make one clip
    out, truth = tmp_path / "clip.mp4", tmp_path / "truth"
    r = run_cli(
        *still_files,
        *still_files,
        "--out",
        out,
        "--truth",
        truth,
        "--seconds",
        "0.8",
        "--size",
        "128x96",
        "--fps",
        "20",
        "--motion",
        "slow_pan",
    )
    assert r.returncode == 0, r.stderr
    # then the file decodes (PyAV) to 16 frames of 128×96 at 20 fps
    with av.open(str(out)) as container:
        stream = container.streams.video[0]
        frames = [f.to_ndarray(format="bgr24") for f in container.decode(stream)]
        assert stream.average_rate == 20
    assert len(frames) == 16 and frames[0].shape == (96, 128, 3)
    # and the truth folder holds frame_000000.png … frame_000015.png, 0/255, at the frame size
    pngs = sorted(truth.glob("frame_*.png"))
    assert [p.name for p in pngs] == [f"frame_{i:06d}.png" for i in range(16)]
    m = cv2.imread(str(pngs[3]), cv2.IMREAD_GRAYSCALE)
    assert m.shape == (96, 128) and set(np.unique(m)) == {0, 255}
    # and the decoded frame is dark where its truth says lesion
    grey = cv2.cvtColor(frames[3], cv2.COLOR_BGR2GRAY)
    assert grey[m > 0].mean() < grey[m == 0].mean() - 30


@pytest.mark.timeout(60)
def test_cli_missing_image_is_one_error_line(tmp_path, still_files):
    r = run_cli(
        tmp_path / "nope.jpg", still_files[1], "--out", tmp_path / "x.mp4", "--truth", tmp_path
    )
    assert r.returncode != 0
    assert r.stderr.strip().splitlines()[-1].startswith("error: cannot read image")
    assert "Traceback" not in r.stderr


@pytest.mark.timeout(60)
@pytest.mark.parametrize("bad", [["--size", "640by480"], ["--size", "15x15"], ["--motion", "spin"]])
def test_cli_bad_flags_are_rejected_without_traceback(tmp_path, still_files, bad):
    r = run_cli(*still_files, "--out", tmp_path / "x.mp4", "--truth", tmp_path, *bad)
    assert r.returncode == 2
    assert "error:" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.timeout(60)
def test_cli_odd_number_of_paths_is_an_error(tmp_path, still_files):
    r = run_cli(still_files[0], "--out", tmp_path / "x.mp4", "--truth", tmp_path)
    assert r.returncode == 2 and "pairs" in r.stderr


def test_bundled_sample_is_a_small_10_s_640x480_clip_with_credits():
    assert SAMPLE.stat().st_size <= 3 * 1024 * 1024
    with av.open(str(SAMPLE)) as container:
        stream = container.streams.video[0]
        count = sum(1 for _ in container.decode(stream))
        assert (stream.width, stream.height) == (640, 480)
        assert math.isclose(float(stream.average_rate), 30.0)
    assert count == 300
    credits = (SAMPLE.parent / "README.md").read_text()
    assert "1710.05006" in credits and "Codella" in credits
    for image_id in ("ISIC_0003582", "ISIC_0007344", "ISIC_0012206"):
        assert image_id in credits
