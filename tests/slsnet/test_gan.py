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
