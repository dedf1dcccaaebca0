"""The segmenter's ``--smooth auto`` decision: every frame through the network when it keeps up.

The engines here report a network time instead of spending it (no test waits or times anything):
what is checked is the decision the segmenter takes from the time it measured.
"""

from fractions import Fraction

import numpy as np
import pytest
import torch

from stream.assembly import RunConfig, build_segmenter
from stream.frame import Frame, SourceInfo
from stream.smoothing import every_frame_fits, resolve_mode


class ReportedTimeEngine:
    """The Engine protocol around a constant map, recording ``ms`` as its network time."""

    size = 32
    name = "reported"
    threshold = 0.5
    untrained = False

    def __init__(self, ms: float, device: str = "cpu") -> None:
        self.ms, self.device = ms, torch.device(device)
        self.seen: list[tuple[int, int]] = []  # (width, height) of each frame predicted

    def predict(self, frames) -> None:
        for frame in frames:
            self.seen.append(frame.size_wh)
            frame.prob = np.full((self.size, self.size), 0.9, np.float32)
            frame.timings.update(preprocess=1.0, infer=self.ms - 2.0, postprocess=1.0)


def info(*, live: bool, fps: float = 30.0) -> SourceInfo:
    return SourceInfo("camera:0" if live else "file:x.mp4", (320, 240), fps, Fraction(1, 90000),
                      live=live)


def frames(n: int) -> list[Frame]:
    image = np.zeros((240, 320, 3), np.uint8)
    return [Frame(image, i, i * 3000, Fraction(1, 90000), 0.0) for i in range(n)]


@pytest.mark.timeout(30)
@pytest.mark.parametrize(("ms", "fps", "mode", "sign"), [
    (10.0, 30.0, "flow", "≤"),  # budget 0.8 × 33.3 − 3 = 23.7 ms
    (40.0, 30.0, "keyframe", ">"),
    (40.0, 15.0, "flow", "≤"),  # budget 0.8 × 66.7 − 3 = 50.3 ms
    (60.0, 15.0, "keyframe", ">"),
])
def test_auto_on_a_live_cpu_source_follows_the_measured_network_time(ms, fps, mode, sign):
    # given a camera on the CPU and a network that reports ms per frame
    engine = ReportedTimeEngine(ms)
    # when
    segmenter = build_segmenter(RunConfig(smooth="auto"), engine, info(live=True, fps=fps))
    try:
        # then the network was timed on frames of the camera's size, and the mode follows
        assert engine.seen and set(engine.seen) == {(320, 240)}
        assert segmenter.mode == mode
        budget = 0.8 * 1000 / fps - 3
        assert segmenter.choice == (f"network {ms:.0f} ms a frame {sign} {budget:.0f} ms that "
                                    f"{fps:g} fps allows")
        # and keyframes get the network on a thread of their own; flow runs it on every frame
        assert (segmenter.network is not None) == (mode == "keyframe")
        if mode == "flow":
            before = len(engine.seen)
            segmenter.step(frames(5))
            assert len(engine.seen) - before == 5
    finally:
        segmenter.close()


@pytest.mark.parametrize(("smooth", "live", "device", "mode"), [
    ("auto", False, "cpu", "flow"),  # a file waits for the network: every frame, whatever it costs
    ("auto", True, "cuda", "flow"),  # a GPU keeps up
    ("keyframe", True, "cpu", "keyframe"),  # an explicit mode stays
    ("flow", True, "cpu", "flow"),
])
def test_auto_times_nothing_where_it_has_nothing_to_decide(smooth, live, device, mode):
    engine = ReportedTimeEngine(500.0, device)
    config = RunConfig(smooth=smooth)
    segmenter = build_segmenter(config, engine, info(live=live))
    try:
        assert segmenter.mode == mode and segmenter.choice is None and engine.seen == []
    finally:
        segmenter.close()


def test_rule_matches_the_keyframe_interval():
    assert every_frame_fits(23.0, 30.0) and not every_frame_fits(25.0, 30.0)
    assert every_frame_fits(25.0, 15.0)
    assert resolve_mode("auto", live=True, cpu=True, net_ms=23.0, fps=30.0) == "flow"
    assert resolve_mode("auto", live=True, cpu=True, net_ms=25.0, fps=30.0) == "keyframe"
    assert resolve_mode("auto", live=True, cpu=True, net_ms=None, fps=30.0) == "keyframe"
