"""Networks for tests: random weights whose attention counts in the output."""

import torch

from slsnet import build_generator
from slsnet.blocks import CAM, PAM
from slsnet.checkpoint import save_generator


def open_gates(seed: int = 1, *, pam: float = 0.7, cam: float = 0.05):
    """A generator in eval mode with seeded random weights and its attention gates open.

    ``pam`` and ``cam`` are the gate values (η of every PAM, γ of every CAM).
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        generator = build_generator().eval()
    # Gates start at 0: open them so that attention counts. An untrained CAM's unscaled C×C
    # softmax is near one-hot and, wide open (γ 0.3), turns float rounding into 5e-4 (torch's
    # own fused vs plain PAM differ by 2e-5 then): the small default γ keeps the ONNX tests about
    # the export.
    for m in generator.modules():
        if isinstance(m, PAM):
            m.eta.data.fill_(pam)
        if isinstance(m, CAM):
            m.gamma.data.fill_(cam)
    return generator


def centre_head(generator, x: torch.Tensor):
    """``generator`` with its head rescaled so that its logits on ``x`` have median 0 and std 2.

    Raw random weights give probabilities near 0.55 everywhere: a mask test on them would
    compare two all-lesion masks. Args: x: N×3×S×S, normalised as the network expects.
    """
    with torch.no_grad():
        logits = generator.logits(x)
        scale = 2.0 / float(logits.std())
        generator.head.bias -= logits.median()
        generator.head.weight *= scale
        generator.head.bias *= scale
    return generator


def save_constant(path, logit: float):
    """Save to ``path`` the weights of a generator that gives every pixel the same ``logit``.

    Its head's weights are 0 and its bias ``logit``: +10 calls every pixel lesion, -10 none.
    """
    generator = build_generator().eval()
    with torch.no_grad():
        generator.head.weight.zero_()
        generator.head.bias.fill_(logit)
    return save_generator(generator, path)


def save_no_lesion(path):
    """Save the weights of a generator whose every probability is ~0 (head bias -10) to ``path``.

    Nothing is drawn over the frames, so a test can read a clip's bar code back from the
    rendered output.
    """
    return save_constant(path, -10.0)
