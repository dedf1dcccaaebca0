"""The adversarial game of SLSNet (paper §3.4): G, D, their optimisers and one training step.

Per batch: one discriminator step (real pairs vs generated pairs, the fake detached), then one
generator step (adversarial + λ·L1 + α·Jaccard). ``slsnet.train`` runs it over epochs.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from slsnet.config import SLSNetConfig
from slsnet.discriminator import Discriminator, build_discriminator
from slsnet.generator import Generator, build_generator
from slsnet.losses import DiscriminatorLosses, GeneratorLosses, discriminator_loss, generator_loss


@dataclass
class Hyper:
    """Optimisation settings (paper §4.3 defaults)."""

    lr: float = 2e-4
    betas: tuple[float, float] = (0.5, 0.999)
    l1_weight: float = 0.1  # λ
    jaccard_weight: float = 0.5  # α
    adversarial_weight: float = 1.0  # weight of BCE(D(x, G(x)), 1)
    bce_weight: float = 0.0  # pixel-wise BCE of G(x) against y (not in the paper)
    lovasz_weight: float = 0.0  # the Lovász extension of the Jaccard distance (not in the paper)
    amp: bool = False  # bf16 autocast
    ema_decay: float = 0.0  # > 0: validate and save an exponential moving average of G
    d_lr_scale: float = 1.0  # D's learning rate is G's times this (the paper: 1)
    weight_decay: float = 0.0  # > 0: AdamW's decoupled decay of G's conv/linear weights


def generator_optimiser(generator: Generator, hyper: Hyper) -> torch.optim.Optimizer:
    """G's optimiser: Adam as the paper, or AdamW with ``hyper.weight_decay`` > 0.

    The decay reaches the weights of convolutions and linear layers (tensors of two or more
    dimensions) only; BatchNorm's scales and shifts, biases and the attention modules' γ keep
    their values. Without decay all parameters form one group, as in every checkpoint saved
    before the option existed, so those runs resume unchanged.
    """
    if hyper.weight_decay <= 0:
        return torch.optim.Adam(generator.parameters(), lr=hyper.lr, betas=hyper.betas)
    params = list(generator.parameters())
    groups = [
        {"params": [p for p in params if p.ndim >= 2], "weight_decay": hyper.weight_decay},
        {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=hyper.lr, betas=hyper.betas)


class GANTrainer:
    """Holds G, D and their optimisers; one ``step`` is backward_d then backward_g.

    With ``hyper.ema_decay`` > 0 it also keeps an exponential moving average of G's weights
    and BatchNorm statistics, updated after every generator step: :attr:`averaged` is the
    generator to validate and ship (the adversarial game makes the raw weights jitter from step
    to step; the average does not take part in training).
    """

    def __init__(self, config: SLSNetConfig, hyper: Hyper, device: torch.device) -> None:
        self.config, self.hyper, self.device = config, hyper, device
        self.generator: Generator = build_generator(config=config).to(device)
        self.discriminator: Discriminator = build_discriminator(config=config).to(device)
        self.opt_g = generator_optimiser(self.generator, hyper)
        self.opt_d = torch.optim.Adam(
            self.discriminator.parameters(), lr=hyper.lr * hyper.d_lr_scale, betas=hyper.betas
        )
        self.ema: AveragedModel | None = None
        if hyper.ema_decay > 0:
            self.ema = AveragedModel(self.generator, use_buffers=True,
                                     multi_avg_fn=get_ema_multi_avg_fn(hyper.ema_decay))
            self.ema.module.eval()

    def start_from(self, generator: Generator) -> None:
        """Copy a trained generator's weights into G (and its average), e.g. to fine-tune."""
        if generator.config != self.config:
            raise ValueError(
                f"--init weights are for {generator.config}, this run builds {self.config}"
            )
        self.generator.load_state_dict(generator.state_dict())
        if self.ema is not None:
            self.ema.module.load_state_dict(generator.state_dict())

    @property
    def averaged(self) -> Generator:
        """The generator to validate and save: the moving average if kept, else G itself."""
        return self.generator if self.ema is None else self.ema.module

    def set_lr(self, lr: float) -> None:
        """G's learning rate from now on, and D's at ``hyper.d_lr_scale`` times it.

        A schedule calls this every step.
        """
        for opt, rate in ((self.opt_g, lr), (self.opt_d, lr * self.hyper.d_lr_scale)):
            for group in opt.param_groups:
                group["lr"] = rate

    def _autocast(self):
        if not self.hyper.amp:
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)

    def backward_d(
        self, x: torch.Tensor, y: torch.Tensor, fake: torch.Tensor
    ) -> DiscriminatorLosses:
        """Discriminator phase: real (x, y) → 1, generated (x, G(x)) → 0; G gets no gradient."""
        self.opt_d.zero_grad(set_to_none=True)
        with self._autocast():
            losses = discriminator_loss(
                self.discriminator(x, y), self.discriminator(x, fake.detach())
            )
        losses["total"].backward()
        self.opt_d.step()
        return losses

    def backward_g(
        self, x: torch.Tensor, y: torch.Tensor, fake: torch.Tensor, *, adversarial: bool = True
    ) -> GeneratorLosses:
        """Generator phase: fool the (now fixed) D, plus the L1 and Jaccard terms.

        ``adversarial`` False: the supervised terms alone, D is not run.
        """
        self.opt_g.zero_grad(set_to_none=True)
        for p in self.discriminator.parameters():
            p.requires_grad_(False)
        with self._autocast():
            losses = generator_loss(
                self.discriminator(x, fake) if adversarial else None,
                y,
                fake,
                l1_weight=self.hyper.l1_weight,
                jaccard_weight=self.hyper.jaccard_weight,
                adversarial_weight=self.hyper.adversarial_weight,
                bce_weight=self.hyper.bce_weight,
                lovasz_weight=self.hyper.lovasz_weight,
            )
        losses["total"].backward()
        for p in self.discriminator.parameters():
            p.requires_grad_(True)
        self.opt_g.step()
        if self.ema is not None:
            self.ema.update_parameters(self.generator)
        return losses

    def step(self, x: torch.Tensor, y: torch.Tensor, *, adversarial: bool = True
             ) -> dict[str, float]:
        """One training step on a batch; returns the loss terms as floats.

        ``adversarial`` False: a supervised step, G alone on its L1/Jaccard/BCE terms (D is
        neither run nor trained, and its losses are reported as 0).
        """
        self.generator.train()
        self.discriminator.train()
        x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
        with self._autocast():
            # the sigmoid in fp32: a bf16 probability is exactly 1.0 from p ≈ 0.998 up, where its
            # gradient p·(1 − p) is 0, and a confidently wrong pixel would never be corrected
            fake = torch.sigmoid(self.generator.logits(x).float())
        if adversarial:
            d = self.backward_d(x, y, fake)
        else:
            zero = torch.zeros(())
            d = {"total": zero, "real": zero, "fake": zero}
        g = self.backward_g(x, y, fake, adversarial=adversarial)
        out = {f"d_{k}": v.item() for k, v in d.items()}
        out.update({f"g_{k}": v.item() for k, v in g.items()})
        return out

    def state(self) -> dict:
        """Everything but the data RNG needed to continue exactly."""
        return {
            "generator": self.generator.state_dict(),
            "discriminator": self.discriminator.state_dict(),
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict(),
        } | ({"ema": self.ema.state_dict()} if self.ema is not None else {})

    def load_state(self, state: dict) -> None:
        """Inverse of :meth:`state`, except that the rate and the weight decay are this trainer's.

        An optimiser's state dict carries the learning rate it was saved with; a resume with a
        new ``--lr`` (e.g. a lower rate to finish a run) must not be silently undone by it.
        A checkpoint without a moving average (saved without ``--ema-decay``) starts the
        average at the loaded generator.
        """
        saved_groups = len(state["opt_g"]["param_groups"])
        if saved_groups != len(self.opt_g.param_groups):
            saved = "with" if saved_groups > 1 else "without"
            raise ValueError(
                f"the checkpoint was trained {saved} --weight-decay; resume it {saved}"
            )
        self.generator.load_state_dict(state["generator"])
        self.discriminator.load_state_dict(state["discriminator"])
        self.opt_g.load_state_dict(state["opt_g"])
        if saved_groups > 1:  # the decay is this trainer's, as the learning rate is
            self.opt_g.param_groups[0]["weight_decay"] = self.hyper.weight_decay
        self.opt_d.load_state_dict(state["opt_d"])
        self.set_lr(self.hyper.lr)
        if self.ema is None:
            return
        if "ema" in state:
            self.ema.load_state_dict(state["ema"])
        else:
            self.ema.module.load_state_dict(self.generator.state_dict())
            self.ema.n_averaged.fill_(1)
