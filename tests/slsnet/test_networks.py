import pytest
import torch
from support.half import fp16_tolerance, round_fp16
from support.nets import open_gates

from slsnet import SLSNetConfig, build_discriminator, build_generator
from slsnet.blocks import CAM, PAM, pam_reference
from slsnet.info import count_conv_macs, count_params, describe


@pytest.mark.parametrize("size", [64, 128, 256])
def test_generator_and_discriminator_shapes(size):
    # given
    gen, disc = build_generator(), build_discriminator()
    x = torch.randn(2, 3, size, size)
    # when
    with torch.inference_mode():
        prob = gen.eval()(x)
        score = disc.eval()(x, prob)
    # then
    assert prob.shape == (2, 1, size, size)
    assert float(prob.min()) >= 0 and float(prob.max()) <= 1
    assert score.shape == (2, 1, size // 8 - 1, size // 8 - 1)


def test_budget_matches_the_paper_at_128():
    info = describe(128)
    assert 2.2e6 <= info["generator"]["params"] <= 2.5e6
    assert 0.85e9 <= info["generator"]["conv_macs"] <= 0.95e9


@pytest.mark.parametrize(("size", "low", "high"), [(64, 0.20e9, 0.25e9), (256, 3.3e9, 3.8e9)])
def test_macs_scale_with_input_like_table_7(size, low, high):
    assert low <= describe(size)["generator"]["conv_macs"] <= high


def test_mac_counter_on_a_known_conv():
    conv = torch.nn.Conv2d(3, 8, 3, padding=1)
    assert count_conv_macs(conv, torch.zeros(1, 3, 10, 10)) == 8 * 10 * 10 * 3 * 9
    deconv = torch.nn.ConvTranspose2d(4, 2, 3, stride=2, padding=1, output_padding=1)
    assert count_conv_macs(deconv, torch.zeros(1, 4, 5, 5)) == 4 * 5 * 5 * 2 * 9
    assert count_params(conv) == 8 * 3 * 9 + 8


def test_gradients_reach_every_parameter():
    # given: gates opened so that attention branches carry gradient
    torch.manual_seed(0)
    gen, disc = build_generator(), build_discriminator()
    for m in list(gen.modules()) + list(disc.modules()):
        if isinstance(m, CAM):
            m.gamma.data.fill_(0.1)
        if isinstance(m, PAM):
            m.eta.data.fill_(0.1)
    x = torch.randn(2, 3, 64, 64)
    # when
    prob = gen.train()(x)
    (disc.train()(x, prob).mean() + prob.mean()).backward()
    # then
    for name, p in list(gen.named_parameters()) + list(disc.named_parameters()):
        assert p.grad is not None and torch.count_nonzero(p.grad) > 0, name


def test_zero_gates_make_attention_the_identity():
    x = torch.randn(2, 32, 8, 8)
    cam, pam = CAM(), PAM(32)
    assert torch.equal(cam(x), x)
    assert torch.equal(pam.eval()(x), x)


def test_fused_pam_equals_the_paper_formula_in_float64():
    # given: a PAM with an open gate, and inputs whose energies are large (no 1/sqrt(d) scaling)
    torch.manual_seed(1)
    pam = PAM(32).double().eval()
    pam.eta.data.fill_(0.7)
    x = 3 * torch.randn(2, 32, 12, 12, dtype=torch.float64)
    # when
    with torch.inference_mode():
        fast, slow = pam(x), pam_reference(pam, x)
    # then
    torch.testing.assert_close(fast, slow, rtol=1e-9, atol=1e-9)


def test_pam_is_unscaled():
    # a scaled softmax (1/sqrt(d)) would differ from the reference by far more than this
    torch.manual_seed(2)
    pam = PAM(16).eval()
    pam.eta.data.fill_(1.0)
    x = 2 * torch.randn(1, 16, 8, 8)
    with torch.inference_mode():
        torch.testing.assert_close(pam(x), pam_reference(pam, x), rtol=1e-4, atol=1e-4)


def test_bf16_forward_on_cpu_has_no_nan():
    # given: trained-like gates and large activations, where a plain fp16 bmm overflows
    torch.manual_seed(3)
    gen = open_gates(seed=3, pam=0.5, cam=0.5)
    x = 4 * torch.randn(2, 3, 64, 64)
    # when
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        prob = gen(x)
    # then
    assert not torch.isnan(prob).any()


def test_batch_and_inference_mode_agree_with_single_images():
    gen = build_generator().eval()
    x = torch.randn(3, 3, 64, 64)
    with torch.inference_mode():
        batched = gen(x)
        single = torch.cat([gen(x[i : i + 1]) for i in range(3)])
    torch.testing.assert_close(batched, single, rtol=1e-4, atol=1e-5)


def test_config_round_trip_and_unknown_keys():
    cfg = SLSNetConfig(dropout_decoder=0.2)
    assert SLSNetConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown"):
        SLSNetConfig.from_dict({"nope": 1})


@pytest.mark.cuda
def test_fp16_forward_on_cuda_matches_fp32():
    torch.manual_seed(4)
    gen = build_generator().cuda().eval()
    for m in gen.modules():
        if isinstance(m, PAM):
            m.eta.data.fill_(0.5)
    x = torch.randn(2, 3, 128, 128, device="cuda")
    with torch.inference_mode():
        ref = gen(x)
        with torch.autocast("cuda", dtype=torch.float16):
            half = gen(x)
    assert not torch.isnan(half).any()
    assert (half.float() - ref).abs().max() < 5e-2


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)])
def test_fused_pam_in_half_is_within_the_fp16_tolerance(device):
    # given unscaled energies in the hundreds (x = 4·randn), where one fp16 rounding of q and k
    # moves the softmax visibly
    torch.manual_seed(5)
    pam = PAM(64).eval()
    pam.eta.data.fill_(1.0)
    x = 4 * torch.randn(2, 64, 32, 32)
    # when the fused attention runs in half precision
    with torch.inference_mode():
        half = pam.half().to(device)(x.half().to(device)).float().cpu()
        pam.float().cpu()  # the reference runs on the CPU, in float64
        # then it is as close to the formula (float64, inputs and weights rounded to fp16 as
        # the half run sees them) as fp16 arithmetic allows
        ref = pam_reference(pam.half().double(), round_fp16(x).double()).float()
    assert not torch.isnan(half).any()
    assert (half - ref).abs().max() <= fp16_tolerance(pam.float(), x)


def test_channels_last_survives_every_block():
    # given the network and its input in channels_last, attention gates open
    gen = open_gates().to(memory_format=torch.channels_last)
    x = torch.randn(2, 3, 64, 64).contiguous(memory_format=torch.channels_last)
    nchw = []

    def check(name):
        def hook(module, inputs, output):
            if output.dim() == 4 and output.shape[1] > 1:  # one channel: both layouts at once
                if not output.is_contiguous(memory_format=torch.channels_last):
                    nchw.append(f"{name} ({type(module).__name__})")
        return hook

    for name, module in gen.named_modules():
        module.register_forward_hook(check(name))
    # when
    with torch.inference_mode():
        out = gen(x)
    # then no block hands the next one NCHW (each would cost a layout conversion), and the
    # values are those of the NCHW network
    assert not nchw, nchw
    with torch.inference_mode():
        ref = open_gates()(x.contiguous())
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)
