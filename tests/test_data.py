import cv2
import numpy as np
import pytest

from slsnet.data import Batches, augment, find_pairs, load_arrays


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
