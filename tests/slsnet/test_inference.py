"""slsnet.inference: test-time augmentation by mirror images, and its use by the CLIs."""

import json

import cv2
import numpy as np
import pytest
import torch
from support.nets import centre_head

from slsnet import build_generator
from slsnet.checkpoint import load_generator, save_generator
from slsnet.data import find_pairs, read_mask, read_rgb, resize_to_input, to_tensor
from slsnet.evaluate import main as evaluate_main
from slsnet.inference import MIRRORS, mirror, mirror_mean, predict_net, predict_probs
from slsnet.metrics import MetricAccumulator
from slsnet.predict import main as predict_main

CPU = torch.device("cpu")
EPS32 = float(np.finfo(np.float32).eps)


def test_mirror_is_its_own_inverse_and_flips_the_named_axes():
    image = np.arange(2 * 3 * 3).reshape(2, 3, 3)
    assert mirror(image, (True, False))[0].tolist() == image[1].tolist()
    assert mirror(image, (False, True))[:, 0].tolist() == image[:, 2].tolist()
    for flip in MIRRORS:
        np.testing.assert_array_equal(mirror(mirror(image, flip), flip), image)


def test_each_map_is_mirrored_back_before_the_mean():
    # given a "network" that answers every image with the same left-to-right ramp
    ramp = np.tile(np.linspace(0, 1, 8, dtype=np.float32), (8, 1))
    calls = []

    def predict(views):
        calls.append(len(views))
        return [ramp] * len(views)

    # when it is averaged over two images and their mirror images
    out = mirror_mean(predict, [np.zeros((5, 7, 3), np.uint8), np.zeros((9, 4, 3), np.uint8)])
    # then it ran once on all eight views, and the ramp and its mirror average to 0.5
    assert calls == [8]
    assert len(out) == 2 and all(p.dtype == np.float32 and p.shape == (8, 8) for p in out)
    np.testing.assert_allclose(out[0], 0.5, atol=2 * EPS32)


def test_the_views_are_the_images_mirrors_in_order():
    # given two different images and a "network" that returns each view's first channel
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (6, 6, 3), dtype=np.uint8) for _ in range(2)]

    def predict(views):
        assert all(v.flags["C_CONTIGUOUS"] for v in views)
        return [v[..., 0].astype(np.float32) for v in views]

    # when / then: a per-pixel network is unchanged by the mean (4 equal terms, rounding aside)
    for image, out in zip(images, mirror_mean(predict, images), strict=True):
        np.testing.assert_allclose(out, image[..., 0], rtol=4 * EPS32)


def test_predict_net_with_tta_is_the_mean_of_the_mirrored_networks():
    # given a generator and a batch of two images at its size
    torch.manual_seed(0)
    generator = build_generator().eval()
    batch = np.random.default_rng(1).integers(0, 256, (2, 128, 128, 3), dtype=np.uint8)
    # when the mirror mean is taken
    got = predict_net(generator, batch, CPU, tta=True)
    # then it is the mean of the network on the four mirrors (run in the same batch of 8)
    views = np.stack([mirror(im, f) for f in MIRRORS for im in batch])
    probs = predict_net(generator, views, CPU)
    want = [sum(mirror(probs[k * 2 + i], f) for k, f in enumerate(MIRRORS)) / 4 for i in range(2)]
    np.testing.assert_array_equal(got, np.stack(want).astype(np.float32))
    assert not np.array_equal(got, predict_net(generator, batch, CPU))


def _tiny_set(root, n=3):
    """``n`` noise images with one box mask each under ``root``; their network inputs."""
    rng = np.random.default_rng(2)
    for folder in ("images", "masks"):
        (root / folder).mkdir(parents=True)
    for i in range(n):
        cv2.imwrite(str(root / "images" / f"im{i}.png"), rng.integers(0, 256, (60, 80, 3),
                                                                       dtype=np.uint8))
        mask = np.zeros((60, 80), np.uint8)
        mask[10:40, 20:60] = 255
        cv2.imwrite(str(root / "masks" / f"im{i}_segmentation.png"), mask)
    return to_tensor(np.stack([resize_to_input(read_rgb(p.image), 128)
                               for p in find_pairs(root)]))


def _spread_weights(path, x, seed):
    """Weights whose masks on ``x`` are neither empty nor full (``support.nets.centre_head``)."""
    torch.manual_seed(seed)
    return save_generator(centre_head(build_generator().eval(), x), path)


@pytest.mark.timeout(120)
def test_evaluate_tta_scores_the_mirror_mean_and_says_so(tmp_path):
    # given a tiny data set and weights
    weights = _spread_weights(tmp_path / "g.pt", _tiny_set(tmp_path / "data"), seed=3)
    base = ["--data", str(tmp_path / "data"), "--weights", str(weights), "--device", "cpu"]
    # when it is scored with and without --tta
    assert evaluate_main([*base, "--json", str(tmp_path / "plain.json")]) == 0
    assert evaluate_main([*base, "--tta", "--json", str(tmp_path / "tta.json")]) == 0
    plain, tta = (json.loads((tmp_path / n).read_text()) for n in ("plain.json", "tta.json"))
    # then the report says which it scored, and scored the masks of the mirror mean
    assert plain["tta"] is False and tta["tta"] is True and tta["n"] == 3
    assert plain["metrics"]["jsc"] != tta["metrics"]["jsc"]
    pairs = find_pairs(tmp_path / "data")
    generator = load_generator(weights)
    for key, flag in ((plain, False), (tta, True)):
        acc = MetricAccumulator()
        probs = predict_probs(generator, [read_rgb(p.image) for p in pairs], device=CPU, tta=flag)
        for prob, pair in zip(probs, pairs, strict=True):
            acc.update(prob > 0.5, read_mask(pair.mask))
        assert key["metrics"]["jsc"] == pytest.approx(acc.mean()["jsc"], abs=1e-12)


@pytest.mark.timeout(120)
def test_predict_tta_writes_the_mirror_means_mask(tmp_path):
    # given an image and weights
    weights = _spread_weights(tmp_path / "g.pt", _tiny_set(tmp_path / "data", n=1), seed=4)
    (image,) = (tmp_path / "data" / "images").iterdir()
    # when masks are written with --tta
    assert predict_main([str(image), "--weights", str(weights), "--out", str(tmp_path / "o"),
                         "--device", "cpu", "--tta"]) == 0
    # then the mask is the mirror mean's, at the image's size, not the single view's
    written = cv2.imread(str(tmp_path / "o" / f"{image.stem}_mask.png"), cv2.IMREAD_GRAYSCALE)
    masks = {tta: (prob > 0.5).astype(np.uint8) * 255 for tta in (False, True)
             for prob in predict_probs(load_generator(weights), [read_rgb(image)], device=CPU,
                                       tta=tta)}
    np.testing.assert_array_equal(written, masks[True])
    assert written.shape == (60, 80) and (masks[True] != masks[False]).mean() > 0.01
