"""MirrorEngine (--tta): any engine run on each frame and its mirror images, their mean."""

from fractions import Fraction

import numpy as np
import pytest
import torch

from slsnet import build_generator
from slsnet.checkpoint import save_generator
from slsnet.inference import MIRRORS, mirror
from stream.engines import CpuEngine, Engine, build_engine
from stream.engines.mirror import MirrorEngine
from stream.engines.postprocess import prob_to_mask
from stream.frame import Frame

CPU = torch.device("cpu")


def make_frame(image: np.ndarray, index: int = 0) -> Frame:
    return Frame(image=np.ascontiguousarray(image), index=index, pts=index,
                 time_base=Fraction(1, 25), capture_time=0.0)


@pytest.fixture(scope="module")
def inner() -> CpuEngine:
    torch.manual_seed(0)
    return CpuEngine(build_generator().eval(), threads=1)


def test_each_frame_gets_the_mean_of_its_mirrors_maps_mirrored_back(inner):
    # given a frame of a non-square size
    image = np.random.default_rng(0).integers(0, 256, (90, 150, 3), dtype=np.uint8)
    engine = MirrorEngine(inner)
    frame = make_frame(image, index=7)
    # when it is segmented with the mirror mean
    engine.infer([frame])
    # then its map is the mean of the inner engine's maps of its four mirror images (run as one
    # batch, as the wrapper runs them), each flipped back, and its mask is that map's
    views = [make_frame(mirror(image, flip), index=7) for flip in MIRRORS]
    inner.predict(views)
    want = sum(mirror(v.prob, flip) for v, flip in zip(views, MIRRORS, strict=True)) / 4
    np.testing.assert_array_equal(frame.prob, want.astype(np.float32))
    np.testing.assert_array_equal(frame.mask, prob_to_mask(want, (150, 90), inner.threshold))
    # and the plain network gives another map: the mean is not a no-op
    plain = make_frame(image)
    inner.predict([plain])
    assert np.abs(plain.prob - frame.prob).max() > 1e-3


def test_a_batch_keeps_its_frames_apart_and_its_timings(inner):
    # given two different frames in one call
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) for _ in range(2)]
    engine = MirrorEngine(inner)
    batch = [make_frame(im, index=i) for i, im in enumerate(images)]
    engine.predict(batch)
    # then each frame has its own map, the one it gets alone (a batch of 8 views instead of 4
    # may change the kernels' order of summation: float32 rounding, far below 1e-4)
    for frame, image in zip(batch, images, strict=True):
        alone = make_frame(image)
        engine.predict([alone])
        np.testing.assert_allclose(frame.prob, alone.prob, atol=1e-4)
        assert set(frame.timings) == {"preprocess", "infer", "postprocess"}
        assert frame.mask is None and frame.image is not None


def test_build_engine_wraps_when_asked_and_names_it(tmp_path):
    # given weights on disk
    torch.manual_seed(1)
    weights = save_generator(build_generator().eval(), tmp_path / "g.pt")
    plain = build_engine(device=CPU, weights=weights, runtime="torch", threads=1)
    tta = build_engine(device=CPU, weights=weights, runtime="torch", threads=1, tta=True)
    # then the wrapped engine is an Engine like any other and says what it does
    assert isinstance(tta, Engine) and isinstance(tta, MirrorEngine)
    assert not isinstance(plain, MirrorEngine)
    assert tta.name == f"{plain.name}, mirror mean of 4"
    assert (tta.size, tta.threshold, tta.untrained) == (plain.size, plain.threshold, False)


def test_prepare_and_close_pass_to_an_engine_that_has_them(inner):
    # given the CPU engine, which has neither, and an engine that records both
    class Recording:
        device, size, threshold, untrained, name = CPU, 128, 0.5, False, "recording"

        def __init__(self):
            self.calls = []

        def prepare(self, size_wh):
            self.calls.append(("prepare", size_wh))

        def close(self):
            self.calls.append(("close",))

    recording = Recording()
    # when / then: the CPU engine's wrapper does nothing, the other passes the calls on
    MirrorEngine(inner).prepare((64, 48))
    MirrorEngine(inner).close()
    wrapped = MirrorEngine(recording)
    wrapped.prepare((64, 48))
    wrapped.close()
    assert recording.calls == [("prepare", (64, 48)), ("close",)]
