"""The soak benchmark: a looping source, samples, the RSS verdict, and bounded run statistics."""

import json
import threading
import time

import pytest
from support.media import read_index, write_clip

from stream.queues import EOS, FrameQueue
from stream.soak import Sample, main, rss_mb, verdict
from stream.sources import LoopingSource
from stream.stats import PipelineStats


@pytest.mark.timeout(120)
def test_looping_source_runs_indices_and_timestamps_on_across_passes(tmp_path):
    # given a 5-frame clip played in a loop
    clip = write_clip(tmp_path / "c.mp4", frames=5, size_wh=(96, 64))
    source = LoopingSource(clip.path)
    stop = threading.Event()
    source.start(stop)
    # when 13 frames are read (two passes and a bit)
    frames = [source.queue.get(stop, timeout=30) for _ in range(13)]
    stop.set()
    assert source.join(10)
    # then indices and PTS keep increasing, by one frame across each pass boundary
    assert all(f is not EOS for f in frames)
    assert [f.index for f in frames] == list(range(13))
    step = clip.pts[1] - clip.pts[0]
    assert [f.pts for f in frames] == [clip.pts[0] + i * step for i in range(13)]
    assert [read_index(f.image) for f in frames] == [i % 5 for i in range(13)]
    assert source.passes >= 2 and source.error is None  # (it may have read ahead)


def sample(t: float, rss: float) -> Sample:
    return Sample(t, int(t), 1.0, 10.0, 20.0, rss, None, 0)


@pytest.mark.timeout(60)
def test_verdict_compares_growth_after_warm_up_with_the_limit():
    flat = [sample(30, 300), sample(60, 320), sample(90, 310)]
    assert verdict(flat, 50)["ok"] is True
    assert verdict(flat, 50)["growth_mb"] == pytest.approx(20)
    leak = [sample(30, 300), sample(60, 330), sample(90, 360)]
    result = verdict(leak, 50)
    assert result["ok"] is False and result["growth_mb"] == pytest.approx(60)
    assert result["slope_mb_per_min"] == pytest.approx(60)
    assert verdict([sample(30, 300)], 50)["ok"] is None


@pytest.mark.timeout(240)
def test_a_short_soak_reports_samples_and_a_verdict(tmp_path, capsys):
    clip = write_clip(tmp_path / "c.mp4", frames=4, size_wh=(96, 64))
    out = tmp_path / "soak.json"
    rc = main(["--minutes", "0.15", "--interval", "3", "--clip", str(clip.path),
               "--json", str(out), "--threads", "1"])
    report = json.loads(out.read_text())
    assert rc == (0 if report["verdict"]["ok"] else 1)
    assert report["frames"] >= 1 and report["loops"] >= 0 and not report["interrupted"]
    samples = report["samples"]
    assert len(samples) >= 2
    assert [s["t_s"] for s in samples] == sorted(s["t_s"] for s in samples)
    assert all(s["rss_mb"] > 50 and s["gpu_mb"] is None for s in samples)
    assert samples[-1]["frames"] == report["frames"]
    assert "RSS after warm-up" in capsys.readouterr().err


@pytest.mark.timeout(120)
def test_run_statistics_stay_small_over_a_long_run():
    # given the statistics of a long run: 100 000 frames of seven stages
    stats = PipelineStats()
    timings = dict.fromkeys(("decode", "preprocess", "infer", "postprocess", "smooth",
                             "render"), 1.5)
    before = rss_mb()
    now = time.perf_counter()
    for i in range(100_000):
        stats.processed_frame(timings, now - 0.01, now + i * 0.005)
    grown = rss_mb() - before
    # then they hold a few MB (Python floats in deques took ~30 MB here), and still summarise
    assert grown < 12
    summary = stats.summary()
    assert summary.latency["infer"][0] == pytest.approx(1.5)


class _StoppedPass:
    """A decoding pass that saw the stop as it started: its queue holds only the end."""

    def __init__(self) -> None:
        self.queue = FrameQueue(2, "lossless")
        self.error = None

    def start(self, stop: threading.Event) -> None:
        stop.set()
        self.queue.put(EOS, threading.Event())

    def join(self, timeout: float) -> bool:
        return True


@pytest.mark.timeout(60)
def test_a_stop_between_two_passes_ends_the_loop_quietly(tmp_path):
    # given a looping source whose stop comes as its second pass starts, before that pass has
    # given a frame (the soak's end, or Ctrl-C, can fall there)
    clip = write_clip(tmp_path / "c.mp4", frames=3, size_wh=(64, 48))
    source = LoopingSource(clip.path, queue_size=16)  # room for every frame: no consumer here
    stop = threading.Event()
    first_pass = source._open_pass
    passes = iter([first_pass, _StoppedPass])
    source._open_pass = lambda: next(passes)()
    # when the loop runs, then it ends without an error, the first pass whole
    source._run(stop)
    assert source.passes == 1 and source._decoded == 3
