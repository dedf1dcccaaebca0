"""slsnet.geometry: where the lesion is in a mask."""

import numpy as np

from slsnet.geometry import lesion_centre


def test_lesion_centre_is_the_mean_of_the_lesion_pixels_as_row_then_column():
    # given an L-shaped lesion in a 64×48 (W×H) mask: a 2×6 bar and a 4×2 foot
    mask = np.zeros((48, 64), np.uint8)
    mask[10:12, 40:46] = 1  # 12 pixels, mean row 10.5, mean column 42.5
    mask[12:16, 40:42] = 1  # 8 pixels, mean row 13.5, mean column 40.5
    # when / then: the pixel mean (row 11.7, column 41.7), not the bounding box's centre
    assert lesion_centre(mask) == (11.7, 41.7)
    # and 0/255 and bool masks give the same
    assert lesion_centre(mask * 255) == lesion_centre(mask.astype(bool)) == (11.7, 41.7)


def test_a_mask_without_lesion_has_no_centre():
    assert lesion_centre(np.zeros((48, 64), np.uint8)) is None
