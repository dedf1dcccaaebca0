import cv2
import numpy as np
import pytest


@pytest.fixture
def quarter_lesion(tmp_path):
    """A data folder of one 10×20 grey image whose lesion is its left quarter (5 columns)."""
    data = tmp_path / "set"
    (data / "images").mkdir(parents=True)
    (data / "masks").mkdir()
    mask = np.zeros((10, 20), np.uint8)
    mask[:, :5] = 255
    cv2.imwrite(str(data / "images" / "IMD001.bmp"), np.full((10, 20, 3), 128, np.uint8))
    cv2.imwrite(str(data / "masks" / "IMD001_lesion.png"), mask)
    return data
