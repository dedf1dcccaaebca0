"""One GAN step, the generator's moving average, and starting from trained weights."""

import pytest
import torch

from slsnet import SLSNetConfig
from slsnet.gan import GANTrainer, Hyper


def test_a_resume_with_a_new_learning_rate_uses_it():
    # given a checkpoint saved at lr 5e-4
    first = GANTrainer(SLSNetConfig(), Hyper(lr=5e-4), torch.device("cpu"))
    state = first.state()
    # when it is resumed with --lr 1e-4
    second = GANTrainer(SLSNetConfig(), Hyper(lr=1e-4), torch.device("cpu"))
    second.load_state(state)
    # then both optimisers run at 1e-4, not at the rate stored in the checkpoint
    rates = {g["lr"] for opt in (second.opt_g, second.opt_d) for g in opt.param_groups}
    assert rates == {1e-4}


def _batch(seed: int = 0, size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(2, 3, size, size, generator=g) * 2 - 1
    return x, (torch.rand(2, 1, size, size, generator=g) > 0.5).float()


def test_moving_average_of_the_generator_follows_every_step():
    # given a trainer that keeps a moving average with decay 0.5
    torch.manual_seed(0)
    trainer = GANTrainer(SLSNetConfig(input_size=32), Hyper(ema_decay=0.5), torch.device("cpu"))
    weight = lambda g: g.head.weight.detach().clone()  # noqa: E731
    # when it takes two steps, noting the raw weights after each
    trainer.step(*_batch(0))
    w1 = weight(trainer.generator)
    trainer.step(*_batch(1))
    w2 = weight(trainer.generator)
    # then the average is w1 after the first step, blended 0.5/0.5 after the second
    assert trainer.averaged is not trainer.generator
    torch.testing.assert_close(weight(trainer.averaged), 0.5 * w1 + 0.5 * w2)
    assert not torch.equal(w1, w2)
    # and BatchNorm statistics are averaged too, not left at their initial values
    bn = [m for m in trainer.averaged.modules() if isinstance(m, torch.nn.BatchNorm2d)][0]
    assert not torch.equal(bn.running_mean, torch.zeros_like(bn.running_mean))
    # and without a decay the generator itself is what is validated and saved
    plain = GANTrainer(SLSNetConfig(input_size=32), Hyper(), torch.device("cpu"))
    assert plain.averaged is plain.generator and "ema" not in plain.state()


def test_moving_average_resumes_and_starts_from_an_older_checkpoint():
    torch.manual_seed(0)
    cpu = torch.device("cpu")
    # given a checkpoint with an average, and one saved without (an older run)
    with_ema = GANTrainer(SLSNetConfig(input_size=32), Hyper(ema_decay=0.9), cpu)
    with_ema.step(*_batch(0))
    with_ema.step(*_batch(1))
    without = GANTrainer(SLSNetConfig(input_size=32), Hyper(), cpu)
    without.step(*_batch(2))
    # when each is resumed with --ema-decay
    a = GANTrainer(SLSNetConfig(input_size=32), Hyper(ema_decay=0.9), cpu)
    a.load_state(with_ema.state())
    b = GANTrainer(SLSNetConfig(input_size=32), Hyper(ema_decay=0.9), cpu)
    b.load_state(without.state())
    # then the first continues its average, the second starts it at the loaded generator
    for name, tensor in with_ema.averaged.state_dict().items():
        torch.testing.assert_close(a.averaged.state_dict()[name], tensor)
    for name, tensor in without.generator.state_dict().items():
        torch.testing.assert_close(b.averaged.state_dict()[name], tensor)
    assert int(a.ema.n_averaged) == 2 and int(b.ema.n_averaged) == 1


def test_start_from_copies_a_trained_generator_into_g_and_its_average():
    torch.manual_seed(0)
    cpu = torch.device("cpu")
    # given a generator that took a step, and a fresh trainer with a moving average
    donor = GANTrainer(SLSNetConfig(input_size=32), Hyper(), cpu)
    donor.step(*_batch(0))
    trainer = GANTrainer(SLSNetConfig(input_size=32), Hyper(ema_decay=0.9), cpu)
    # when
    trainer.start_from(donor.generator)
    # then both G and the average start from its weights and BatchNorm statistics
    for name, tensor in donor.generator.state_dict().items():
        torch.testing.assert_close(trainer.generator.state_dict()[name], tensor)
        torch.testing.assert_close(trainer.averaged.state_dict()[name], tensor)
    # and weights for another input size are refused
    with pytest.raises(ValueError, match="--init weights are for"):
        GANTrainer(SLSNetConfig(input_size=64), Hyper(), cpu).start_from(donor.generator)


def _first_d_change(d_lr_scale: float) -> tuple[dict[str, torch.Tensor], float]:
    """D's change in its first step, and the largest weight magnitude before or after it."""
    torch.manual_seed(0)
    trainer = GANTrainer(SLSNetConfig(input_size=32), Hyper(lr=1e-3, d_lr_scale=d_lr_scale),
                         torch.device("cpu"))
    before = {k: p.detach().clone() for k, p in trainer.discriminator.named_parameters()}
    torch.manual_seed(1)  # G's dropout draws the same in both trainers
    trainer.step(*_batch(0))
    after = dict(trainer.discriminator.named_parameters())
    largest = max(max(before[k].abs().max(), after[k].detach().abs().max()) for k in before)
    return {k: after[k].detach() - before[k] for k in before}, float(largest)


def test_the_discriminator_learns_at_its_own_rate():
    # given two trainers alike but for D's rate, 1x and 0.25x G's
    (full, size_full), (quarter, size_quarter) = _first_d_change(1.0), _first_d_change(0.25)
    # then D's first step is a quarter as long: Adam's first step is lr * g / (|g| + eps) for
    # each weight, and both trainers compute the same g. What is left is the rounding of
    # p + step (half an ulp of the weight each) and a few ulps of the step itself.
    atol = 8 * torch.finfo(torch.float32).eps * max(size_full, size_quarter)
    for name, step in full.items():
        torch.testing.assert_close(quarter[name], 0.25 * step, rtol=0, atol=atol)
    assert max(s.abs().max() for s in full.values()) > 1e-4  # D did move
    # and a new rate keeps the ratio: the schedule sets G's, D follows
    trainer = GANTrainer(SLSNetConfig(input_size=32), Hyper(d_lr_scale=0.25), torch.device("cpu"))
    trainer.set_lr(4e-4)
    assert {g["lr"] for g in trainer.opt_g.param_groups} == {4e-4}
    assert {g["lr"] for g in trainer.opt_d.param_groups} == {1e-4}


def test_weight_decay_shrinks_the_conv_and_linear_weights_alone():
    # given a trainer with AdamW's decay 0.1 at lr 1e-2, and gradients that are all zero
    trainer = GANTrainer(SLSNetConfig(input_size=32), Hyper(lr=1e-2, weight_decay=0.1),
                         torch.device("cpu"))
    named = dict(trainer.generator.named_parameters())
    before = {k: p.detach().clone() for k, p in named.items()}
    for p in named.values():
        p.grad = torch.zeros_like(p)
    # when G's optimiser takes one step
    trainer.opt_g.step()
    # then Adam's part of the step is 0 (a zero first moment), and what is left is the decay:
    # each conv/linear weight times (1 - lr * decay), one float32 rounding of the product
    decayed = {k for k, p in named.items() if p.ndim >= 2}
    assert any(k.endswith("gamma") for k in named) and any(k.endswith("bias") for k in named)
    assert all(not k.endswith(("gamma", "bias")) for k in decayed)
    for k, p in named.items():
        if k in decayed:
            torch.testing.assert_close(p.detach(), before[k] * (1 - 1e-3),
                                       rtol=torch.finfo(torch.float32).eps, atol=0)
        else:  # BatchNorm, biases, the attention γ
            assert torch.equal(p.detach(), before[k]), k
    assert sum(before[k].abs().sum() for k in decayed) > 0


def test_a_checkpoint_resumes_only_as_it_was_trained_with_or_without_decay():
    cpu = torch.device("cpu")
    plain = GANTrainer(SLSNetConfig(input_size=32), Hyper(), cpu).state()
    decayed = GANTrainer(SLSNetConfig(input_size=32), Hyper(weight_decay=0.05), cpu).state()
    # a checkpoint without decay resumes without it, as every run saved before the option did
    GANTrainer(SLSNetConfig(input_size=32), Hyper(), cpu).load_state(plain)
    # and refuses a resume that would change the optimiser under it, either way
    with pytest.raises(ValueError, match="trained without --weight-decay; resume it without"):
        GANTrainer(SLSNetConfig(input_size=32), Hyper(weight_decay=0.05), cpu).load_state(plain)
    with pytest.raises(ValueError, match="trained with --weight-decay; resume it with"):
        GANTrainer(SLSNetConfig(input_size=32), Hyper(), cpu).load_state(decayed)
    # a new decay is used from the resume on, as a new learning rate is
    trainer = GANTrainer(SLSNetConfig(input_size=32), Hyper(weight_decay=0.01), cpu)
    trainer.load_state(decayed)
    assert [g["weight_decay"] for g in trainer.opt_g.param_groups] == [0.01, 0.0]


def test_a_confidently_wrong_pixel_keeps_its_gradient_in_bf16():
    # given: a generator sure of lesion everywhere (logit 10, p = 0.99995: 1.0 in bf16) and
    # a mask of background only, trained on pixel BCE alone under bf16 autocast
    trainer = GANTrainer(
        SLSNetConfig(input_size=32),
        Hyper(amp=True, bce_weight=1.0, jaccard_weight=0.0, l1_weight=0.0),
        torch.device("cpu"),
    )
    with torch.no_grad():
        trainer.generator.head.weight.zero_()
        trainer.generator.head.bias.fill_(10.0)
    x, _ = _batch(0)
    # when
    trainer.step(x, torch.zeros(2, 1, 32, 32), adversarial=False)
    # then: the bias gets BCE's full pull, the mean of p − y over the pixels (0.99995), not the
    # 0 of a sigmoid whose bf16 output has saturated; the gradient passes the head in bf16,
    # whose spacing near 1 is 2^-8 below and 2^-7 above
    assert trainer.generator.head.bias.grad.item() == pytest.approx(0.99995, abs=2**-7)
