import cv2
import numpy as np
import pytest

from slsnet.data import (
    Batches,
    augment,
    find_pairs,
    jitter_colour,
    load_arrays,
    resize_to_input,
    rotate,
    to_tensor,
    zoom_crop,
)


def _write(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), array)


def test_pairs_by_stem_prefix_across_naming_schemes(tmp_path):
    img = np.zeros((8, 8, 3), np.uint8)
    m = np.zeros((8, 8), np.uint8)
    _write(tmp_path / "images" / "ISIC_0000001.jpg", img)
    _write(tmp_path / "masks" / "ISIC_0000001_segmentation.png", m)
    _write(tmp_path / "images" / "IMD002.bmp", img)
    _write(tmp_path / "masks" / "IMD002_lesion.bmp", m)
    _write(tmp_path / "images" / "plain.png", img)
    _write(tmp_path / "masks" / "plain.png", m)
    _write(tmp_path / "images" / "IMD0021.png", img)  # a longer stem must not steal IMD002's mask
    _write(tmp_path / "masks" / "IMD0021_lesion.png", m)
    pairs = {p.image.name: p.mask.name for p in find_pairs(tmp_path)}
    assert pairs == {
        "ISIC_0000001.jpg": "ISIC_0000001_segmentation.png",
        "IMD002.bmp": "IMD002_lesion.bmp",
        "IMD0021.png": "IMD0021_lesion.png",
        "plain.png": "plain.png",
    }


def test_an_image_without_mask_is_named(tmp_path):
    _write(tmp_path / "images" / "a.png", np.zeros((4, 4, 3), np.uint8))
    (tmp_path / "masks").mkdir()
    with pytest.raises(ValueError, match="have no mask, e.g. a"):
        find_pairs(tmp_path)
    with pytest.raises(FileNotFoundError, match="not a folder"):
        find_pairs(tmp_path / "nowhere")


def test_augment_moves_image_and_mask_together():
    # given: an image whose red channel is the mask
    rng = np.random.default_rng(0)
    mask = np.zeros((16, 16), np.uint8)
    mask[2:6, 3:12] = 1
    image = np.zeros((16, 16, 3), np.uint8)
    image[..., 0] = mask * 255
    for _ in range(20):
        # when
        im, m = augment(image, mask, rng)
        # then: red > 127 exactly where the mask is, whatever flip/gamma/CLAHE was drawn
        assert np.array_equal(im[..., 0] > 127, m.astype(bool))
        assert im.flags.c_contiguous and m.shape == (16, 16)


def test_batches_are_reproducible_from_the_rng_state(tmp_path):
    images = np.random.default_rng(1).integers(0, 255, (5, 8, 8, 3), dtype=np.uint8)
    masks = (images[..., 0] > 127).astype(np.uint8)
    a = [x for x, _ in Batches(images, masks, 2, np.random.default_rng(7))]
    b = [x for x, _ in Batches(images, masks, 2, np.random.default_rng(7))]
    assert [t.shape[0] for t in a] == [2, 2, 1]
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert float(a[0].min()) >= -1 and float(a[0].max()) <= 1


def test_load_arrays_resizes_to_the_network_size(tmp_path):
    _write(tmp_path / "images" / "x.jpg", np.full((40, 60, 3), 200, np.uint8))
    mask = np.zeros((40, 60), np.uint8)
    mask[:, 30:] = 255
    _write(tmp_path / "masks" / "x_segmentation.png", mask)
    images, masks = load_arrays(find_pairs(tmp_path), 16)
    assert images.shape == (1, 16, 16, 3) and masks.shape == (1, 16, 16)
    assert masks[0, :, :8].sum() == 0 and masks[0, :, 8:].all()


def test_load_arrays_enlarges_a_small_image_as_inference_does(tmp_path):
    # given: an image smaller than the network input
    image = np.random.default_rng(2).integers(0, 255, (10, 12, 3), dtype=np.uint8)
    _write(tmp_path / "images" / "x.png", image[..., ::-1])
    _write(tmp_path / "masks" / "x.png", np.zeros((10, 12), np.uint8))
    # when
    images, _ = load_arrays(find_pairs(tmp_path), 32)
    # then: the same pixels inference would feed the network (bilinear, not area's blocks)
    assert np.array_equal(images[0], resize_to_input(image, 32))
    assert not np.array_equal(images[0], cv2.resize(image, (32, 32), interpolation=cv2.INTER_AREA))


def test_zoom_crop_cuts_one_window_from_image_and_mask():
    # given: an image whose channels are its own x and y, and a checkerboard mask
    y, x = np.mgrid[0:64, 0:64]
    image = np.stack([x, y, np.zeros_like(x)], axis=-1).astype(np.uint8)
    mask = ((x + y) % 2).astype(np.uint8)
    rng = np.random.default_rng(3)
    sides = set()
    for _ in range(50):
        # when
        im, m = zoom_crop(image, mask, rng, max_zoom=2.0)
        # then: a square window of 32–64 pixels, the same one in both
        assert im.shape[:2] == m.shape and 32 <= m.shape[0] <= 64 and m.shape[0] == m.shape[1]
        assert np.array_equal(m, (im[..., 0].astype(int) + im[..., 1]) % 2)
        sides.add(m.shape[0])
    assert len(sides) > 5  # the zoom varies


def test_rotate_turns_image_and_mask_by_the_same_random_angle():
    # given: a lesion off centre, drawn in the image's red channel and in the mask
    image = np.zeros((64, 64, 3), np.uint8)
    mask = np.zeros((64, 64), np.uint8)
    mask[16:26, 34:50] = 1  # inside the inscribed circle: no angle turns it out of view
    image[..., 0] = mask * 255
    rng = np.random.default_rng(5)
    centres = set()
    for _ in range(20):
        # when
        im, m = rotate(image, mask, rng)
        # then: same size, the lesion keeps its area and the image shows it where the mask does
        assert im.shape == image.shape and m.shape == mask.shape
        assert abs(int(m.sum()) - int(mask.sum())) <= 0.1 * mask.sum()
        assert ((im[..., 0] > 127) != (m > 0)).mean() <= 0.02
        ys, xs = np.nonzero(m)
        centres.add((round(ys.mean() / 4), round(xs.mean() / 4)))
    # and the angle varies: the lesion lands in many places around the centre
    assert len(centres) > 10


def test_aimed_zoom_crops_hold_the_lesion_centre_where_unaimed_ones_often_miss_it():
    # given: a small lesion in a corner of a 64×64 image (its centre at row 8, column 52)
    mask = np.zeros((64, 64), np.uint8)
    mask[4:13, 48:57] = 1
    image = np.dstack([mask * 255] * 3).astype(np.uint8)

    def crops(aim: bool) -> list[np.ndarray]:
        rng = np.random.default_rng(4)
        return [zoom_crop(image, mask, rng, 3.0, aim=aim)[1] for _ in range(100)]

    # when / then: every aimed crop shows the lesion, and on average a larger share of it
    aimed, anywhere = crops(True), crops(False)
    assert all(m.any() for m in aimed)
    assert sum(not m.any() for m in anywhere) > 20
    assert np.mean([m.mean() for m in aimed]) > 2 * np.mean([m.mean() for m in anywhere])
    # and an image without a lesion still gets a crop, from anywhere
    rng = np.random.default_rng(0)
    empty = np.zeros_like(mask)
    assert {zoom_crop(image, empty, rng, 3.0, aim=True)[1].shape for _ in range(30)} != {(64, 64)}


def test_batches_without_zoom_draw_exactly_the_paper_augmentation():
    # given: the batches of a run without --zoom, and the same rng driven by hand
    images = np.random.default_rng(1).integers(0, 255, (5, 8, 8, 3), dtype=np.uint8)
    masks = (images[..., 0] > 127).astype(np.uint8)
    got = [x for x, _ in Batches(images, masks, 5, np.random.default_rng(7))]
    rng = np.random.default_rng(7)
    order = rng.permutation(5)
    want = to_tensor(np.stack([augment(images[i], masks[i], rng)[0] for i in order]))
    # then: the same draws, so checkpoints of older runs resume as they would have
    assert len(got) == 1 and np.array_equal(got[0], want)


def test_zoom_batches_come_out_at_the_network_size_with_the_lesion_reframed():
    # given: 64×64 arrays whose left half is lesion, for a 32×32 network
    images = np.zeros((6, 64, 64, 3), np.uint8)
    masks = np.zeros((6, 64, 64), np.uint8)
    masks[:, :, :32] = 1
    images[..., 0] = masks * 255

    def lesion_shares(zoom: float) -> list[float]:
        batches = Batches(images, masks, 3, np.random.default_rng(0), size=32, zoom=zoom)
        out = []
        for _ in range(4):
            for x, y in batches:
                assert x.shape[1:] == (3, 32, 32) and y.shape[1:] == (1, 32, 32)
                # the image still shows the lesion where the mask says (but for the one
                # column at the edge that resampling blends)
                wrong = ((x[:, :1] > 0) != (y > 0.5)).float().mean(dim=(1, 2, 3))
                assert float(wrong.max()) <= 1 / 32
                out += y.mean(dim=(1, 2, 3)).tolist()
        return out

    # then: without zoom every sample is half lesion (flips keep that), with it the share varies
    assert set(lesion_shares(0.0)) == {0.5}
    shares = lesion_shares(1.0)
    assert min(shares) < 0.4 and max(shares) > 0.6


def test_colour_jitter_turns_the_hue_and_leaves_grey_and_the_mask_alone():
    # given: a reddish-brown lesion colour and a neutral grey, as RGB
    image = np.zeros((4, 8, 3), np.uint8)
    image[:, :4] = (150, 90, 60)
    image[:, 4:] = (128, 128, 128)
    hsv = cv2.cvtColor(image, cv2.COLOR_RGB2HSV).astype(int)
    hues, sats = set(), set()
    for seed in range(40):
        out = jitter_colour(image, np.random.default_rng(seed))
        assert out.dtype == np.uint8 and out.shape == image.shape
        got = cv2.cvtColor(out, cv2.COLOR_RGB2HSV).astype(int)
        turn = (got[0, 0, 0] - hsv[0, 0, 0] + 90) % 180 - 90  # OpenCV hue: 2° a unit
        assert abs(turn) <= 8 + 1  # ±16°, one unit for rounding through RGB
        hues.add(int(got[0, 0, 0]))
        sats.add(int(got[0, 0, 1]))
        # grey has no hue or saturation to turn: it stays grey, only brighter or darker
        r, g, b = (int(c) for c in out[0, 7])
        assert r == g == b and 0.8 * 128 - 1 <= r <= 1.2 * 128 + 1
    assert len(hues) > 5 and len(sats) > 5  # it does vary


def test_batches_draw_colour_jitter_only_when_asked():
    images = np.random.default_rng(1).integers(0, 255, (4, 8, 8, 3), dtype=np.uint8)
    masks = (images[..., 0] > 127).astype(np.uint8)
    plain = [x for x, _ in Batches(images, masks, 4, np.random.default_rng(7))]
    off = [x for x, _ in Batches(images, masks, 4, np.random.default_rng(7), colour=0.0)]
    on = [(x, y) for x, y in Batches(images, masks, 4, np.random.default_rng(7), colour=1.0)]
    assert np.array_equal(plain[0], off[0])  # colour 0 draws nothing: older runs resume as before
    assert not np.array_equal(plain[0], on[0][0])
    # the first sample's mask is that of the same flips as without jitter (the jitter comes
    # after them and moves no pixel; later samples draw from a moved generator)
    ys = [y for _, y in Batches(images, masks, 4, np.random.default_rng(7))]
    assert np.array_equal(ys[0][0], on[0][1][0])
