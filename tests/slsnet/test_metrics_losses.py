import numpy as np
import pytest
import torch

from slsnet.losses import (
    discriminator_loss,
    generator_loss,
    jaccard_loss,
    l1_loss,
    lovasz_loss,
)
from slsnet.metrics import (
    MetricAccumulator,
    confusion,
    image_changes,
    mean_scores,
    scores,
    size_bands,
)


def test_hand_worked_example():
    # given: 4×4 truth with 4 lesion pixels; prediction hits 3, misses 1, adds 2
    truth = np.zeros((4, 4), bool)
    truth[0, :4] = True
    pred = np.zeros((4, 4), bool)
    pred[0, :3] = True
    pred[1, :2] = True
    # when
    counts = confusion(pred, truth)
    s = scores(counts)
    # then: TP 3, FP 2, FN 1, TN 10
    assert counts.tolist() == [3, 2, 1, 10]
    assert s["acc"] == pytest.approx(13 / 16)
    assert s["dsc"] == pytest.approx(6 / 9)
    assert s["jsc"] == pytest.approx(3 / 6)
    assert s["sen"] == pytest.approx(3 / 4)
    assert s["spe"] == pytest.approx(10 / 12)
    assert s["jsc_th"] == 0.0  # 0.5 < 0.65


def test_jsc_threshold_keeps_good_scores():
    truth = np.ones((10, 10), bool)
    pred = truth.copy()
    pred[0, :] = False  # JSC 0.9
    assert scores(confusion(pred, truth))["jsc_th"] == pytest.approx(0.9)


def test_empty_versus_empty_is_perfect():
    empty = np.zeros((5, 7), np.uint8)
    assert scores(confusion(empty, empty)) == {
        k: 1.0 for k in ("acc", "dsc", "jsc", "sen", "spe", "jsc_th")
    }


def test_torch_float_and_uint8_masks_any_size():
    truth = torch.zeros(3, 5)
    truth[1:, 2:] = 1
    prob = torch.full((3, 5), 0.9)
    counts = confusion(prob, (truth.numpy() * 255).astype(np.uint8))
    assert counts.tolist() == [6, 9, 0, 0]


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="shape"):
        confusion(np.zeros((2, 2)), np.zeros((3, 2)))


def test_mean_is_per_image_and_pooled_is_global():
    # image A: perfect on 1 pixel; image B: 0 of 9 lesion pixels found
    a_truth = np.zeros((3, 3), bool)
    a_truth[0, 0] = True
    b_truth = np.ones((3, 3), bool)
    acc = MetricAccumulator()
    acc.update(a_truth, a_truth)
    acc.update(np.zeros((3, 3), bool), b_truth)
    assert acc.mean()["jsc"] == pytest.approx(0.5)
    assert acc.pooled()["jsc"] == pytest.approx(1 / 10)
    assert mean_scores([a_truth], [a_truth])["dsc"] == 1.0


def test_median_is_the_middle_image_and_changes_count_images_past_a_margin():
    # given: three images scoring JSC 1, 1/2 and 0 (a perfect 2×2 lesion, half found, none)
    truth = np.zeros((4, 4), bool)
    truth[:2, :2] = True
    half = np.zeros((4, 4), bool)
    half[:2, 0] = True
    acc = MetricAccumulator()
    for pred in (truth, half, np.zeros((4, 4), bool)):
        acc.update(pred, truth)
    # then: the median is the middle image's score while the mean is pulled by the failure
    assert acc.median()["jsc"] == pytest.approx(0.5) and acc.median()["sen"] == pytest.approx(0.5)
    assert MetricAccumulator().median()["jsc"] == 0.0
    # a change within the margin (0.01 by default) is no change, on either side
    assert image_changes([0.9, 0.5, 0.3, 0.705], [0.5, 0.9, 0.295, 0.7]) == {"better": 1,
                                                                           "worse": 1}
    assert image_changes([0.9, 0.5], [0.5, 0.9], margin=0.5) == {"better": 0, "worse": 0}


def test_size_bands_group_images_by_lesion_area():
    # given: lesion areas in three bands (an empty mask, 3 %, 4 %, 50 %, the whole image)
    truth = [0.0, 0.03, 0.04, 0.5, 1.0]
    pred = [0.01, 0.06, 0.04, 0.25, 0.5]
    jsc = [0.0, 0.5, 1.0, 0.5, 0.5]
    # when
    bands = size_bands(truth, pred, jsc)
    # then: 0-5 % holds three images, its ratio the median of 2 and 1 (the empty mask has none);
    # 40-100 % holds the whole image too; empty bands are left out
    assert [(b["from"], b["to"], b["n"]) for b in bands] == [(0.0, 0.05, 3), (0.4, 1.0, 2)]
    assert bands[0]["jsc"] == pytest.approx(0.5) and bands[0]["area_ratio"] == pytest.approx(1.5)
    assert bands[1]["jsc"] == pytest.approx(0.5) and bands[1]["area_ratio"] == pytest.approx(0.5)
    assert size_bands([0.0], [0.1], [0.0])[0]["area_ratio"] is None


def test_loss_values_on_known_inputs():
    target = torch.tensor([[[[1.0, 0.0], [1.0, 0.0]]]])
    prob = torch.tensor([[[[0.5, 0.5], [1.0, 0.0]]]])
    # L1: (0.5 + 0.5 + 0 + 0) / 4
    assert float(l1_loss(target, prob)) == pytest.approx(0.25)
    # Jaccard: inter 1.5, union 2 + 1.5 - 1.5 = 2 → 1 - 0.75
    assert float(jaccard_loss(target, prob)) == pytest.approx(0.25, abs=1e-5)
    assert float(jaccard_loss(target, target)) == pytest.approx(0.0, abs=1e-6)
    assert float(jaccard_loss(torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 2, 2))) == pytest.approx(
        0.0
    )
    # generator: BCE(logit 0 → p 0.5, 1) = ln 2; total = ln2 + 0.1·0.25 + 0.5·0.25
    g = generator_loss(torch.zeros(1, 1, 3, 3), target, prob)
    assert float(g["adversarial"]) == pytest.approx(np.log(2), abs=1e-6)
    assert float(g["total"]) == pytest.approx(np.log(2) + 0.025 + 0.125, abs=1e-5)
    g = generator_loss(torch.zeros(1, 1, 3, 3), target, prob, adversarial_weight=0.1)
    assert float(g["total"]) == pytest.approx(0.1 * np.log(2) + 0.025 + 0.125, abs=1e-5)
    # discriminator: both terms ln 2 at logit 0
    d = discriminator_loss(torch.zeros(1, 1, 3, 3), torch.zeros(1, 1, 3, 3))
    assert float(d["total"]) == pytest.approx(2 * np.log(2), abs=1e-6)
    # a confident, correct discriminator has a small loss
    d = discriminator_loss(torch.full((1, 1, 2, 2), 20.0), torch.full((1, 1, 2, 2), -20.0))
    assert float(d["total"]) < 1e-6


def test_lovasz_loss_is_one_minus_iou_on_binary_predictions():
    # given binary masks and predictions, with an empty truth, an empty prediction and both
    rng = np.random.default_rng(0)
    target = torch.from_numpy(rng.random((6, 1, 9, 7)) < 0.4).float()
    prob = torch.from_numpy(rng.random((6, 1, 9, 7)) < 0.5).float()
    target[1] = 0
    prob[2] = 0
    target[3] = prob[3] = 0
    # when / then: the loss is the mean of 1 − IoU (1 for an empty truth with a prediction,
    # 0 for both empty); float32 ratios of counts under 64: a few roundings
    inter = (target * prob).flatten(1).sum(1)
    union = ((target + prob) > 0).float().flatten(1).sum(1)
    iou = torch.where(union > 0, inter / union.clamp(min=1), torch.ones(6))
    assert float(lovasz_loss(target, prob)) == pytest.approx(float((1 - iou).mean()), abs=1e-6)


def test_lovasz_loss_on_a_soft_prediction_and_in_the_generator_loss():
    target = torch.tensor([[[[1.0, 0.0], [1.0, 0.0]]]])
    prob = torch.tensor([[[[0.5, 0.5], [1.0, 0.0]]]], requires_grad=True)
    # errors 0.5, 0.5, 0, 0: the first wrong pixel (either) costs the Jaccard distance 1/2 or
    # 1/3, the second brings it to 2/3, so 0.5·(1/2 + 1/6) = 0.5·(1/3 + 1/3) = 1/3
    loss = lovasz_loss(target, prob)
    assert float(loss.detach()) == pytest.approx(1 / 3, abs=1e-6)
    loss.backward()
    assert prob.grad[0, 0, 0, 0] < 0 < prob.grad[0, 0, 0, 1]  # raise the lesion, lower the skin
    g = generator_loss(None, target, prob.detach(), lovasz_weight=2.0)
    assert float(g["lovasz"]) == pytest.approx(1 / 3, abs=1e-6)
    assert float(g["total"]) == pytest.approx(0.025 + 0.125 + 2 / 3, abs=1e-5)
    assert float(generator_loss(None, target, prob.detach())["lovasz"]) == 0.0
