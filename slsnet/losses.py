"""Losses of SLSNet training (paper eq. 7–11)."""

from __future__ import annotations

from typing import TypedDict

import torch
import torch.nn.functional as F


def adversarial_loss(logits: torch.Tensor, *, real: bool) -> torch.Tensor:
    """BCE of discriminator patch logits against all-real (1) or all-fake (0) targets."""
    target = torch.ones_like(logits) if real else torch.zeros_like(logits)
    return F.binary_cross_entropy_with_logits(logits.float(), target.float())


def l1_loss(target: torch.Tensor, prob: torch.Tensor) -> torch.Tensor:
    """Mean absolute error between mask and probability map."""
    return (target.float() - prob.float()).abs().mean()


def bce_loss(target: torch.Tensor, prob: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Pixel-wise binary cross-entropy of probabilities (clamped away from 0 and 1)."""
    p = prob.float().clamp(eps, 1 - eps)
    return F.binary_cross_entropy(p, target.float())


def jaccard_loss(target: torch.Tensor, prob: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Soft Jaccard distance (paper eq. 9): ``1 − Σgp / (Σg² + Σp² − Σgp)``, mean over images.

    Args:
        target: B×1×H×W ground truth in {0, 1}.
        prob: B×1×H×W predicted probabilities.
        eps: keeps an empty mask with an empty prediction at loss 0 instead of 0/0.
    """
    g, p = target.float().flatten(1), prob.float().flatten(1)
    inter = (g * p).sum(1)
    union = (g * g).sum(1) + (p * p).sum(1) - inter
    return (1 - (inter + eps) / (union + eps)).mean()


def lovasz_loss(target: torch.Tensor, prob: torch.Tensor) -> torch.Tensor:
    """The Lovász extension of the Jaccard distance (Berman et al. 2018), mean over images.

    Each image's pixel errors ``|y − p|``, sorted from the largest, each weighted by what marking
    that pixel wrong, after the larger errors, adds to the Jaccard distance. It is the tightest
    convex surrogate of ``1 − IoU`` and equals it on a binary prediction; the soft Jaccard of
    :func:`jaccard_loss` is looser where a lesion is half found. Not in the paper.

    Args:
        target: B×1×H×W ground truth in {0, 1}.
        prob: B×1×H×W predicted probabilities.
    """
    truth = target.float().flatten(1)
    errors, order = (truth - prob.float().flatten(1)).abs().sort(dim=1, descending=True)
    truth = truth.gather(1, order)
    lesion = truth.sum(1, keepdim=True)
    # Jaccard distance of the mask that gets the first k pixels wrong; the union is ≥ 1
    distance = 1 - (lesion - truth.cumsum(1)) / (lesion + (1 - truth).cumsum(1))
    steps = torch.cat([distance[:, :1], distance[:, 1:] - distance[:, :-1]], dim=1)
    return (errors * steps).sum(1).mean()


class GeneratorLosses(TypedDict):
    """Terms of the generator loss; ``total`` is what is back-propagated."""

    total: torch.Tensor
    adversarial: torch.Tensor
    l1: torch.Tensor
    jaccard: torch.Tensor
    bce: torch.Tensor
    lovasz: torch.Tensor


class DiscriminatorLosses(TypedDict):
    """Terms of the discriminator loss; ``total`` is what is back-propagated."""

    total: torch.Tensor
    real: torch.Tensor
    fake: torch.Tensor


def generator_loss(
    fake_logits: torch.Tensor | None,
    target: torch.Tensor,
    prob: torch.Tensor,
    *,
    l1_weight: float = 0.1,
    jaccard_weight: float = 0.5,
    adversarial_weight: float = 1.0,
    bce_weight: float = 0.0,
    lovasz_weight: float = 0.0,
) -> GeneratorLosses:
    """Paper eq. 7: ``BCE(D(x, G(x)), 1) + λ·L1(y, G(x)) + α·Jaccard(y, G(x))``.

    ``adversarial_weight`` (1 in the paper) scales the first term; see the model card for why the
    shipped weights were trained with a smaller one. ``fake_logits`` ``None`` (a supervised
    phase, no discriminator) leaves the adversarial term out. ``bce_weight`` adds a pixel-wise
    cross-entropy term (0 in the paper), whose gradient does not fade as L1's does near a
    confident wrong pixel. ``lovasz_weight`` adds :func:`lovasz_loss` (0 in the paper).
    """
    l1 = l1_loss(target, prob)
    jac = jaccard_loss(target, prob)
    total = l1_weight * l1 + jaccard_weight * jac
    adv = torch.zeros((), device=prob.device)
    if fake_logits is not None:
        adv = adversarial_loss(fake_logits, real=True)
        total = total + adversarial_weight * adv
    bce = bce_loss(target, prob) if bce_weight else torch.zeros((), device=prob.device)
    if bce_weight:
        total = total + bce_weight * bce
    lovasz = lovasz_loss(target, prob) if lovasz_weight else torch.zeros((), device=prob.device)
    if lovasz_weight:
        total = total + lovasz_weight * lovasz
    return {"total": total, "adversarial": adv, "l1": l1, "jaccard": jac, "bce": bce,
            "lovasz": lovasz}


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> DiscriminatorLosses:
    """Paper eq. 11: ``BCE(D(x, y), 1) + BCE(D(x, G(x)), 0)``, the fake detached by the caller."""
    real = adversarial_loss(real_logits, real=True)
    fake = adversarial_loss(fake_logits, real=False)
    return {"total": real + fake, "real": real, "fake": fake}
