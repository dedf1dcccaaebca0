"""Shades of Grey colour constancy as the generator's first layer (slsnet.colour_constancy)."""

import numpy as np
import pytest
import torch

from slsnet import SLSNetConfig, build_generator, load_generator
from slsnet.checkpoint import save_generator
from slsnet.colour_constancy import GreyBalance
from slsnet.data import to_tensor

# float32 arithmetic on values in [0, 1]: each step (pow, mean, root, ratio, product) keeps a
# relative error of a few ulps (2**-24); a few dozen of them bound the whole layer
RTOL = 64 * 2.0**-24


def reference(rgb: np.ndarray, p: float) -> np.ndarray:
    """The layer's arithmetic in float64 NumPy on an H×W×3 uint8 image; returns values in [0, 1]."""
    x = rgb.astype(np.float64) / 255
    norm = np.power(np.power(x.reshape(-1, 3), p).mean(0), 1 / p)
    return np.clip(x * (norm.mean() / np.maximum(norm, 1e-3)), 0, 1)


def unit(x: torch.Tensor) -> torch.Tensor:
    """The network's [-1, 1] input back to [0, 1]."""
    return x * 0.5 + 0.5


@pytest.mark.parametrize("p", [1.0, 6.0])
def test_the_layer_computes_shades_of_grey_with_clipping(p):
    # given a dermoscopy-like image with a strong reddish cast and a bright blue patch (the
    # patch saturates once blue is raised, so the clip is exercised)
    rng = np.random.default_rng(0)
    rgb = np.stack([rng.integers(150, 256, (32, 40)), rng.integers(40, 120, (32, 40)),
                    rng.integers(10, 60, (32, 40))], axis=-1).astype(np.uint8)
    rgb[:4, :8, 2] = 240
    # when it goes through the layer as the network receives it
    out = unit(GreyBalance(p)(to_tensor(rgb[None])))[0].permute(1, 2, 0).numpy()
    # then it is the float64 formula, within float32's error on values of at most 1
    want = reference(rgb, p)
    assert np.abs(out - want).max() <= RTOL
    assert (want == 1).any() and (want < 1).any()


@pytest.mark.parametrize("p", [1.0, 6.0])
def test_a_global_colour_cast_is_removed_up_to_brightness(p):
    # given an image and the same image under a coloured light (no channel clipped either way)
    x = torch.rand(1, 3, 24, 24, generator=torch.Generator().manual_seed(1)) * 0.4 + 0.1
    cast = x * torch.tensor([1.3, 0.9, 0.6]).view(1, 3, 1, 1)
    layer = GreyBalance(p)
    plain, lit = (unit(layer(v * 2 - 1)) for v in (x, cast))
    # then both come out the same but for one brightness factor over the whole image
    ratio = lit / plain
    assert torch.allclose(ratio, ratio.flatten()[0].expand_as(ratio), rtol=8 * RTOL, atol=0)
    # and each output's channels have equal p-means
    norm = plain.pow(p).mean(dim=(2, 3)).pow(1 / p)[0]
    assert torch.allclose(norm, norm.mean().expand(3), rtol=8 * RTOL, atol=0)


def test_each_image_of_a_batch_is_balanced_alone_and_half_precision_is_kept():
    x = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(2)) * 2 - 1
    layer = GreyBalance(6)
    alone = torch.cat([layer(x[i:i + 1]) for i in range(3)])
    torch.testing.assert_close(layer(x), alone, rtol=0, atol=0)
    assert layer(x.to(torch.bfloat16)).dtype == torch.bfloat16


@pytest.mark.parametrize("p", [0.5, float("inf"), float("nan")])
def test_an_exponent_below_one_or_not_finite_is_refused(p):
    with pytest.raises(ValueError, match="exponent p must be finite and at least 1"):
        GreyBalance(p)


def test_the_generator_balances_its_input_and_keeps_the_same_weights():
    # given two generators that differ only in grey_p, with the same weights
    torch.manual_seed(0)
    plain = build_generator(config=SLSNetConfig()).eval()
    grey = build_generator(config=SLSNetConfig(grey_p=6)).eval()
    assert plain.state_dict().keys() == grey.state_dict().keys()
    grey.load_state_dict(plain.state_dict())
    # then the grey one is the plain one on the balanced image
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(3)) * 2 - 1
    with torch.inference_mode():
        torch.testing.assert_close(grey(x), plain(GreyBalance(6)(x)), rtol=0, atol=0)
        assert not torch.equal(grey(x), plain(x))


def test_saved_weights_keep_their_colour_constancy_and_older_ones_have_none(tmp_path):
    grey = build_generator(config=SLSNetConfig(grey_p=6))
    save_generator(grey, tmp_path / "g.pt")
    loaded = load_generator(tmp_path / "g.pt")
    assert loaded.config.grey_p == 6 and isinstance(loaded.grey, GreyBalance)
    # weights written before the field existed have no grey_p in their config
    blob = torch.load(tmp_path / "g.pt", weights_only=True)
    del blob["config"]["grey_p"]
    torch.save(blob, tmp_path / "old.pt")
    old = load_generator(tmp_path / "old.pt")
    assert old.config.grey_p == 0 and isinstance(old.grey, torch.nn.Identity)


def test_the_onnx_export_carries_the_layer():
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from slsnet.onnx_export import export_onnx
    torch.manual_seed(4)
    grey = build_generator(config=SLSNetConfig(grey_p=6)).eval()
    session = ort.InferenceSession(export_onnx(grey, attention="plain"),
                                   providers=["CPUExecutionProvider"])
    # an input with a cast, so that balancing it changes the network's output
    x = (torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(5))
         * torch.tensor([0.9, 0.5, 0.3]).view(1, 3, 1, 1)) * 2 - 1
    with torch.inference_mode():
        want = grey(x).numpy()
    (got,) = session.run(None, {"x": x.numpy()})
    # the same tolerance as the plain network's export test
    assert np.abs(got - want).max() < 1e-4
