"""The pipeline on real encoded files: counts, timestamps, outputs, failures and shutdown."""

import csv
import threading
import time
from fractions import Fraction

import cv2
import numpy as np
import pytest
import torch
from support.media import decode_video, probe, read_index, vfr_pts, write_clip

from stream.engines import build_engine
from stream.errors import SourceError, StageError
from stream.frame import Frame, SourceInfo
from stream.outputs import CsvSink, MaskDirSink, VideoSink
from stream.outputs.render import Renderer, draw_hud, file_hud_lines, hud_lines
from stream.pipeline import Pipeline
from stream.sources import Source, open_source
from stream.stats import E2E, PipelineStats, RateMeter, Snapshot, percentiles

STAGES = ("preprocess", "infer", "postprocess", "smooth", "render")


@pytest.fixture(scope="module")
def engine():
    return build_engine(device=torch.device("cpu"), weights=None)


def opened(sinks, source):
    for sink in sinks:
        sink.open(source.info)
    return sinks


def live_threads() -> set[str]:
    return {t.name for t in threading.enumerate() if t.is_alive()}


class FailingSink:
    """A sink whose disk 'fills up' after ``ok`` frames (fault injection)."""

    name = "flaky disk"

    def __init__(self, ok: int) -> None:
        self.ok, self.written, self.closed = ok, 0, False

    def open(self, info) -> None:
        pass

    def write(self, frame) -> None:
        if self.written >= self.ok:
            raise OSError(f"no space left after frame {frame.index}")
        self.written += 1

    def close(self) -> None:
        self.closed = True


class FailingEngine:
    """The real engine, failing on its ``fail_at``-th call (fault injection)."""

    def __init__(self, real, fail_at: int) -> None:
        self.real, self.fail_at, self.calls = real, fail_at, 0
        self.device, self.size, self.name = real.device, real.size, real.name
        self.threshold, self.untrained = real.threshold, real.untrained

    def predict(self, frames) -> None:
        self.calls += 1
        if self.calls >= self.fail_at:
            raise RuntimeError("out of memory")
        self.real.predict(frames)


@pytest.mark.timeout(120)
def test_file_to_video_masks_and_csv_keeps_every_frame_and_timestamp(tmp_path, engine):
    # given a variable-frame-rate H.264 clip
    clip = write_clip(tmp_path / "in.mp4", pts=vfr_pts(14))
    source = open_source(str(clip.path))
    out, masks, table = tmp_path / "out.mp4", tmp_path / "masks", tmp_path / "lesion.csv"
    sinks = opened([VideoSink(out), MaskDirSink(masks), CsvSink(table)], source)
    # (the overlay off, so that the frame-index bar code of each frame stays readable)
    plain = Renderer(device=engine.name, hud=False, mask=False)
    # when
    summary = Pipeline(source, engine, sinks=sinks, renderer=plain).run(handle_sigint=False)
    # then: as many frames out as in, at the same presentation times, in order
    assert summary.frames_in == summary.frames_out == clip.frame_count == 14
    assert summary.dropped == 0 and not summary.interrupted
    assert probe(out).pts_seconds == clip.pts_seconds
    decoded = decode_video(out)
    assert [read_index(img) for _, img in decoded] == list(range(14))
    # one PNG mask per frame, at the frame size, 0/255
    pngs = sorted(masks.glob("frame_*.png"))
    assert [p.name for p in pngs] == [f"frame_{i:06d}.png" for i in range(14)]
    mask = cv2.imread(str(pngs[3]), cv2.IMREAD_GRAYSCALE)
    assert mask.shape == (120, 160) and set(np.unique(mask)) <= {0, 255}
    # one CSV row per frame, with the stage timings
    with open(table, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["index"]) for r in rows] == list(range(14))
    assert all(float(r["ms_infer"]) > 0 and r["ms_render"] != "" for r in rows)
    # and the summary has every stage and the end-to-end latency
    assert set(STAGES) | {E2E} <= set(summary.latency)


@pytest.mark.timeout(120)
def test_batched_run_matches_frame_count_and_max_frames(tmp_path, engine):
    # given a 10-frame clip, batches of 3, and a limit of 7 frames
    clip = write_clip(tmp_path / "in.mp4", frames=10)
    source = open_source(str(clip.path))
    seen: list = []

    class Collect(FailingSink):
        name = "collect"

        def write(self, frame):
            seen.append(frame)

    # when
    summary = Pipeline(source, engine, sinks=[Collect(0)], batch=3, max_frames=7).run(
        handle_sigint=False
    )
    # then exactly the first 7 frames went through every stage, in order
    assert summary.frames_out == 7
    assert [f.index for f in seen] == list(range(7))
    assert [f.pts for f in seen] == list(clip.pts[:7])
    for frame in seen:
        assert set(STAGES) <= set(frame.timings)
        assert frame.mask.shape == (120, 160) and frame.rendered.shape == (120, 160, 3)


@pytest.mark.timeout(60)
def test_a_failing_sink_stops_everything_and_names_the_sink(tmp_path, engine):
    # given a long clip, a tiny source queue (the decoder blocks on it), a real video sink and a
    # sink that fails on its third frame
    clip = write_clip(tmp_path / "in.mp4", frames=60)
    source = open_source(str(clip.path), queue_size=2)
    video = VideoSink(tmp_path / "out.mp4")
    flaky = FailingSink(ok=2)
    sinks = opened([video, flaky], source)
    before = live_threads()
    # when
    t0 = time.monotonic()
    with pytest.raises(StageError, match=r"^sink flaky disk failed: no space left") as info:
        Pipeline(source, engine, sinks=sinks).run(handle_sigint=False)
    # then it ended promptly, every thread is gone and every output was closed
    assert time.monotonic() - t0 < 30
    assert info.value.stage == "sink flaky disk"
    assert source.join(0) and live_threads() <= before
    assert flaky.closed
    assert info.value.summary is not None and info.value.summary.frames_out == 2
    assert len(probe(tmp_path / "out.mp4").video_pts) >= 2  # finalised, playable


@pytest.mark.timeout(60)
def test_a_failing_engine_stops_everything_and_names_the_stage(tmp_path, engine):
    clip = write_clip(tmp_path / "in.mp4", frames=40)
    source = open_source(str(clip.path), queue_size=2)
    out = tmp_path / "out.mp4"
    sinks = opened([VideoSink(out)], source)
    before = live_threads()
    with pytest.raises(StageError, match=r"^engine failed: out of memory"):
        Pipeline(source, FailingEngine(engine, fail_at=3), sinks=sinks).run(handle_sigint=False)
    assert source.join(0) and live_threads() <= before
    assert len(probe(out).video_pts) == 2  # the two good frames were written and the file closed


@pytest.mark.timeout(60)
def test_request_stop_finishes_in_flight_frames_and_closes_outputs(tmp_path, engine):
    # given a long clip and a stop requested once a few frames are out
    clip = write_clip(tmp_path / "in.mp4", frames=200)
    source = open_source(str(clip.path))
    out = tmp_path / "out.mp4"
    pipeline = Pipeline(source, engine, sinks=opened([VideoSink(out)], source))

    def progress(stats):
        if stats.frames_out >= 3:
            pipeline.request_stop(interrupted=True)

    # when
    summary = pipeline.run(progress=progress, handle_sigint=False)
    # then it stopped early, and every processed frame is in a properly closed file
    assert summary.interrupted
    assert 3 <= summary.frames_out < 200
    assert summary.frames_out == summary.frames_in
    assert len(probe(out).video_pts) == summary.frames_out


class UnpluggedSource(Source):
    """A camera-like source that delivers a real clip's first frames, then dies."""

    def __init__(self, clip_path, good: int) -> None:
        self.frames = decode_video(clip_path)[:good]
        info = SourceInfo("camera:9", (160, 120), 25.0, Fraction(1, 25), live=True)
        super().__init__(info, "latest", 4)

    def _run(self, stop) -> None:
        for i, (pts, image) in enumerate(self.frames):
            frame = Frame(image, i, pts, self.info.time_base, time.perf_counter())
            self.queue.put(frame, stop)
            self._decoded += 1
        raise SourceError("camera:9 was unplugged")

    def _release(self) -> None:
        pass


@pytest.mark.timeout(60)
def test_a_source_that_dies_is_reported_as_the_source(tmp_path, engine):
    # given a live source that fails after 3 frames, writing to a real video file
    clip = write_clip(tmp_path / "in.mp4", frames=5)
    source = UnpluggedSource(clip.path, good=3)
    out = tmp_path / "out.mp4"
    # when / then: the error names the source, and the frames before it are in a closed file
    with pytest.raises(StageError, match=r"^source camera:9 failed: camera:9 was unplugged"):
        Pipeline(source, engine, sinks=opened([VideoSink(out)], source)).run(handle_sigint=False)
    assert len(probe(out).video_pts) == 3


def test_renderer_tints_inside_the_mask_outlines_it_and_draws_the_hud(engine):

    image = np.full((240, 320, 3), 128, np.uint8)
    mask = np.zeros((240, 320), np.uint8)
    mask[80:160, 100:220] = 1
    frame = Frame(image=image, index=0, pts=0, time_base=1, capture_time=0.0, mask=mask)
    snap = Snapshot(30.0, 9.5, {"infer": (90.0, 120.0), E2E: (150.0, 200.0)}, 3, 10)
    renderer = Renderer(device="cpu fp32", untrained=True)
    renderer(frame, snap)
    out = frame.rendered
    assert out.shape == image.shape and frame.timings["render"] >= 0
    assert (out[120, 160] != image[120, 160]).any() and out[120, 160, 2] > 128  # red tint
    assert (out[230, 310] == image[230, 310]).all()  # outside: untouched
    assert (out[:20, :60] != image[:20, :60]).any()  # HUD box in the corner
    # toggles: no mask, no HUD, but random weights are still flagged
    renderer.show_mask = renderer.show_hud = False
    plain = renderer.render(frame, snap)
    assert (plain[120, 160] == image[120, 160]).all()
    assert (plain[:20, :60] != image[:20, :60]).any()
    renderer.untrained = False
    assert (renderer.render(frame, snap) == image).all()


def test_hud_names_the_smoothing_mode_and_the_keyframe_interval():
    snap = Snapshot(30.0, 29.5, {E2E: (40.0, 60.0)}, 0, 10)
    # given the notes the smoothing stage leaves on a frame
    keyframe = {"smooth": "keyframe", "cut": False, "keyframe": False, "keyframe_interval": 6}
    # when the HUD is laid out / then its device line says what the stage did
    texts = [t for t, _ in hud_lines(snap, device="cpu fp32", untrained=False, notes=keyframe)]
    assert texts[0] == "device cpu fp32  smoothing keyframe every 6"
    flow = [t for t, _ in hud_lines(snap, device="cpu fp32", untrained=False,
                                    notes={"smooth": "flow"})]
    assert flow[0] == "device cpu fp32  smoothing flow"
    assert hud_lines(snap, device="cpu fp32", untrained=False)[0][0] == "device cpu fp32"


def test_hud_names_whose_latency_it_shows():
    snap = Snapshot(30.0, 29.5, {E2E: (40.0, 60.0)}, 0, 10)
    camera = [t for t, _ in hud_lines(snap, device="cpu fp32", untrained=False)]
    assert "latency p50 40 / p95 60 ms" in camera
    # the web demo's Live tab: frames come over the network, the server's part only
    served = [t for t, _ in hud_lines(snap, device="cpu fp32", untrained=False, latency="server")]
    assert "server p50 40 / p95 60 ms" in served and not any("latency" in t for t in served)


def test_a_recordings_hud_says_file_numbers_in_a_smaller_box():
    # given a 640×480 frame of a 30 fps file processed at 5.4 frames/s, 150 ms in the network
    snap = Snapshot(5.4, 5.4, {"preprocess": (5.0, 6.0), "infer": (140.0, 150.0),
                               "postprocess": (5.0, 6.0), E2E: (1673.0, 1800.0)}, 0, 10)
    image = np.full((480, 640, 3), 128, np.uint8)
    notes = {"smooth": "flow"}
    # when the offline HUD is laid out and drawn
    texts = [t for t, _ in file_hud_lines(snap, device="cpu fp32 onnxruntime", untrained=False,
                                          video_fps=30.0, notes=notes)]
    # then it says the processing speed against the video's rate and the network time per
    # frame, and nothing a camera would mean (capture rate, end-to-end latency, drops)
    assert texts == ["cpu fp32 onnxruntime  smoothing flow", "5.4 fps = 0.18x video rate",
                     "network p50 150 ms/frame"]
    live_w, live_h = draw_hud(image.copy(), hud_lines(snap, device="cpu fp32 onnxruntime",
                                                     untrained=False, notes=notes))
    file_w, file_h = draw_hud(image.copy(), file_hud_lines(
        snap, device="cpu fp32 onnxruntime", untrained=False, video_fps=30.0, notes=notes),
        size=Renderer.OFFLINE_SIZE)
    assert file_w * file_h <= live_w * live_h / 3  # a third of the live box or less
    assert file_w <= 640 / 2 and file_h <= 480 / 8
    # and the Renderer draws it when given the video's rate; the live HUD stays the default
    frame = Frame(image=image, index=0, pts=0, time_base=1, capture_time=0.0, notes=notes)
    offline = Renderer(device="cpu fp32 onnxruntime", offline_fps=30.0).render(frame, snap)
    live = Renderer(device="cpu fp32 onnxruntime").render(frame, snap)
    assert (offline[:file_h, :file_w] != 128).any() and (offline[file_h + 1:, :] == 128).all()
    assert (live[file_h + 1:live_h - 1, :file_w] != 128).any()


def test_stats_percentiles_and_rates():
    assert percentiles([1, 2, 3, 4, 5], (50,)) == (3.0,)
    assert all(np.isnan(v) for v in percentiles([]))
    meter = RateMeter(seconds=1.0)
    for i in range(31):
        meter.tick(now=i / 30)
    assert meter.rate() == pytest.approx(30.0, rel=0.05)
    stats = PipelineStats(window=4)
    for i in range(10):
        stats.processed_frame({"infer": float(i)}, capture_time=0.0, now=0.1 * (i + 1))
    snap = stats.snapshot()
    assert snap.latency["infer"][0] == pytest.approx(7.5)  # the last 4 of 0..9
    assert stats.summary().latency["infer"][0] == pytest.approx(4.5)  # the whole run


@pytest.mark.timeout(60)
def test_realtime_playback_drops_frames_and_counts_every_drop(tmp_path, engine):
    # given a 2 s clip played at its own rate by a pipeline slower than 25 fps on this machine
    clip = write_clip(tmp_path / "in.mp4", frames=50)
    source = open_source(str(clip.path), realtime=True, queue_size=1)
    seen: list = []

    class Collect(FailingSink):
        name = "collect"

        def write(self, frame):
            seen.append(frame.index)

    # when
    summary = Pipeline(source, SlowEngine(engine), sinks=[Collect(0)]).run(handle_sigint=False)
    # then frames were dropped, each one is counted, and what came out is in order
    assert summary.dropped > 0
    assert summary.frames_in == summary.frames_out == len(seen)
    assert summary.frames_in + summary.dropped == 50
    assert seen == sorted(set(seen))  # in order, none twice


class SlowEngine(FailingEngine):
    """The real engine, at least 100 ms a call: slower than 25 fps on any machine."""

    def __init__(self, real) -> None:
        super().__init__(real, fail_at=10**9)

    def predict(self, frames) -> None:
        t0 = time.perf_counter()
        super().predict(frames)
        time.sleep(max(0.0, 0.1 - (time.perf_counter() - t0)))
