"""CPU engine, preprocess and postprocess: shapes, axis order, numerics and user errors."""

from fractions import Fraction

import numpy as np
import pytest
import torch

from slsnet import build_generator
from slsnet.checkpoint import WeightsError, save_generator
from slsnet.inference import predict_probs, resize_prob
from stream.engines import (
    DEFAULT_WEIGHTS,
    CpuEngine,
    Engine,
    EngineError,
    build_engine,
    default_threads,
    resolve_device,
)
from stream.engines.postprocess import prob_to_mask
from stream.engines.preprocess import to_input_tensor
from stream.frame import Frame

CPU = torch.device("cpu")


def make_frame(width: int, height: int, seed: int = 0, index: int = 0) -> Frame:
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    return Frame(image=image, index=index, pts=index, time_base=Fraction(1, 25), capture_time=0.0)


@pytest.fixture(scope="module")
def engine() -> CpuEngine:
    return build_engine(device=CPU, weights=None)


def test_prob_to_mask_is_frame_sized_and_binary():
    # given a 128×128 probability whose left half is lesion
    prob = np.zeros((128, 128), np.float32)
    prob[:, :64] = 0.9
    # when it is resized to a non-square (W, H) = (320, 180)
    mask = prob_to_mask(prob, (320, 180), 0.5)
    # then the mask is H×W, uint8 {0, 1}, and the boundary sits in the middle column
    assert mask.shape == (180, 320) and mask.dtype == np.uint8
    assert set(np.unique(mask)) == {0, 1}
    assert mask[:, :155].all() and not mask[:, 165:].any()


def test_prob_to_mask_threshold_is_strict_and_bilinear():
    prob = np.array([[0.0, 1.0]], np.float32)
    # at the same size, 0.5 itself is not lesion
    assert prob_to_mask(np.full((4, 4), 0.5, np.float32), (4, 4), 0.5).sum() == 0
    # bilinear: a 1×2 ramp resized to 8 wide crosses 0.5 in the middle, not at a pixel edge
    row = prob_to_mask(prob, (8, 1), 0.5)[0]
    assert row.tolist() == [0, 0, 0, 0, 1, 1, 1, 1]


def test_prob_to_mask_rejects_bad_input():
    with pytest.raises(ValueError, match="2-D"):
        prob_to_mask(np.zeros((2, 2, 2), np.float32), (4, 4), 0.5)
    with pytest.raises(ValueError, match="positive"):
        prob_to_mask(np.zeros((2, 2), np.float32), (0, 4), 0.5)


def test_preprocess_stretches_converts_bgr_to_rgb_and_normalises():
    # given a pure-blue BGR frame of (W, H) = (300, 100)
    blue = np.zeros((100, 300, 3), np.uint8)
    blue[..., 0] = 255
    # when
    x = to_input_tensor([blue, blue], 128)
    # then: N×3×S×S, RGB order (blue is channel 2), in [-1, 1]
    assert x.shape == (2, 3, 128, 128) and x.dtype == torch.float32
    assert torch.allclose(x[:, 2], torch.ones(1)) and torch.allclose(x[:, 0], -torch.ones(1))
    assert to_input_tensor([blue], 128, channels_last=True).is_contiguous(
        memory_format=torch.channels_last
    )


def test_engine_fills_prob_mask_and_timings_at_each_frame_size(engine):
    # given frames of two sizes in one batch
    frames = [make_frame(160, 120, 1), make_frame(64, 200, 2, index=1)]
    # when
    engine.infer(frames)
    # then
    assert isinstance(engine, Engine)
    for frame in frames:
        assert frame.prob.shape == (128, 128) and frame.prob.dtype == np.float32
        assert 0.0 <= frame.prob.min() <= frame.prob.max() <= 1.0
        width, height = frame.size_wh
        assert frame.mask.shape == (height, width) and frame.mask.dtype == np.uint8
        np.testing.assert_array_equal(frame.mask, prob_to_mask(frame.prob, (width, height), 0.5))
        assert {"preprocess", "infer", "postprocess"} <= set(frame.timings)
        assert all(v >= 0 for v in frame.timings.values())


def test_engine_matches_the_training_inference_path(engine):
    # given the same frame through the engine and through slsnet.inference (RGB in)
    frame = make_frame(256, 192, 3)
    engine.infer([frame])
    rgb = frame.image[..., ::-1].copy()
    (reference,) = predict_probs(engine.generator, [rgb], device=CPU, size=128)
    # then the probabilities agree once resized to the frame size, and so do the masks
    ours = resize_prob(frame.prob, frame.size_wh)
    assert ours.shape == reference.shape == (192, 256)
    np.testing.assert_allclose(ours, reference, atol=1e-4)
    assert np.mean(frame.mask == (reference > 0.5)) > 0.999


def test_random_weights_are_announced_and_deterministic(tmp_path, monkeypatch):
    # given no weights file where the default is looked for
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("stream.engines.base.find_default_weights", lambda: None)
    # when two engines are built
    a = build_engine(device=CPU, weights=None)
    b = build_engine(device=CPU, weights=None)
    # then they say they are untrained and compute the same thing
    assert a.untrained and b.untrained
    fa, fb = make_frame(96, 96, 4), make_frame(96, 96, 4)
    a.infer([fa])
    b.infer([fb])
    np.testing.assert_array_equal(fa.prob, fb.prob)


def test_the_shipped_weights_are_picked_up_whatever_the_working_directory(tmp_path, monkeypatch):
    # given shipped weights inside the package, and other weights at weights/ in the working
    # directory (which played a part once, and must not now)
    torch.manual_seed(7)
    generator = build_generator().eval()
    shipped = save_generator(generator, tmp_path / "package" / "slsnet_isic2017.pt")
    monkeypatch.setattr("stream.engines.base.shipped_weights", lambda: shipped)
    torch.manual_seed(8)
    save_generator(build_generator().eval(), tmp_path / "cwd" / DEFAULT_WEIGHTS)
    monkeypatch.chdir(tmp_path / "cwd")
    # when the engine is built without naming weights
    engine = build_engine(device=CPU, weights=None)
    # then it loaded the shipped file, not random weights nor the working directory's
    assert not engine.untrained
    frame = make_frame(128, 128, 5)
    engine.infer([frame])
    x = to_input_tensor([frame.image], 128)
    with torch.inference_mode():
        expected = generator(x)[0, 0].numpy()
    np.testing.assert_allclose(frame.prob, expected, atol=1e-5)


def test_user_errors_are_one_line(tmp_path):
    with pytest.raises(WeightsError, match="not found"):
        build_engine(device=CPU, weights=tmp_path / "missing.pt")
    with pytest.raises(EngineError, match="fp16 needs a CUDA GPU"):
        build_engine(device=CPU, weights=None, precision="fp16")
    with pytest.raises(EngineError, match="unknown precision"):
        build_engine(device=CPU, weights=None, precision="int4")
    with pytest.raises(EngineError, match="--batch"):
        build_engine(device=CPU, weights=None, batch=0)
    with pytest.raises(EngineError, match="unknown device"):
        resolve_device("tpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without GPU")
def test_cuda_device_without_gpu_is_a_clear_error():
    with pytest.raises(EngineError, match="no CUDA GPU"):
        resolve_device("cuda")
    assert resolve_device("auto") == CPU


def test_bf16_and_fp32_layouts_agree():
    torch.manual_seed(0)
    generator = build_generator().eval()
    frame = make_frame(128, 128, 6)
    x = to_input_tensor([frame.image], 128)
    plain = CpuEngine(build_generator().eval(), channels_last=False)
    plain.generator.load_state_dict(generator.state_dict())
    fast = CpuEngine(generator, channels_last=True)
    bf16 = CpuEngine(generator, precision="bf16", channels_last=True)
    assert "bf16" in bf16.name and "fp32" in fast.name
    p32 = plain.probabilities(x)
    np.testing.assert_allclose(fast.probabilities(x.contiguous(
        memory_format=torch.channels_last)), p32, atol=1e-4)
    np.testing.assert_allclose(bf16.probabilities(x), p32, atol=0.1)


def test_default_threads_leave_a_core_for_io():
    assert default_threads(1) == 1
    assert default_threads(2) == 1
    assert default_threads(4) == 3
    assert default_threads(64) == 8
