import math

import pytest
import torch
import torch.nn.functional as F

from progan.layers import (EqualizedConv2d, EqualizedLinear, downsample2x, fused_kernel, fused_pays_off, fused_shifts,
                           inference_copy, minibatch_stddev, pixel_norm, upsample2x)


def test_equalized_conv_scales_weights_at_run_time():
    conv = EqualizedConv2d(8, 4, 3, gain=math.sqrt(2))
    assert conv.scale == pytest.approx(math.sqrt(2) / math.sqrt(8 * 9))
    x = torch.randn(2, 8, 5, 5)
    expected = F.conv2d(x, conv.weight * math.sqrt(2 / 72), conv.bias, padding=1)
    torch.testing.assert_close(conv(x), expected)
    # weights are stored N(0, 1), biases at zero
    assert abs(conv.weight.std().item() - 1) < 0.2 and conv.bias.abs().sum() == 0


def test_equalized_linear_gain_and_no_bias():
    lin = EqualizedLinear(16, 32, gain=math.sqrt(2) / 4, bias=False)
    assert lin.bias is None
    x = torch.randn(3, 16)
    torch.testing.assert_close(lin(x), x @ (lin.weight * math.sqrt(2) / 4 / 4).T)


def test_pixel_norm_unit_rms_over_channels():
    x = torch.randn(2, 7, 3, 3) * 5
    y = pixel_norm(x)
    torch.testing.assert_close(y.square().mean(dim=1), torch.ones(2, 3, 3), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(y, x / torch.sqrt((x**2).mean(1, keepdim=True) + 1e-8))


def test_minibatch_stddev_matches_hand_computation():
    torch.manual_seed(0)
    x = torch.randn(8, 3, 2, 2)
    y = minibatch_stddev(x, group_size=4)
    assert y.shape == (8, 4, 2, 2)
    torch.testing.assert_close(y[:, :3], x)
    for g in range(2):
        group = x[4 * g:4 * g + 4]
        mean = group.mean(0)
        var = ((group - mean) ** 2).mean(0)          # biased
        expected = torch.sqrt(var + 1e-8).mean()     # over C, H, W
        for i in range(4 * g, 4 * g + 4):
            assert torch.allclose(y[i, 3], expected.expand(2, 2))
    # the two groups really differ: each group gets its own value
    assert y[0, 3, 0, 0] != y[4, 3, 0, 0]


def test_minibatch_stddev_group_larger_than_batch_uses_whole_batch():
    x = torch.randn(4, 2, 1, 1)
    y = minibatch_stddev(x, group_size=16)
    expected = torch.sqrt(x.var(0, unbiased=False) + 1e-8).mean()
    torch.testing.assert_close(y[:, 2].flatten(), expected.expand(4))


@pytest.mark.parametrize("direction", ["up", "down"])
def test_fused_resampling_equals_unfused(direction, monkeypatch):
    import progan.layers
    monkeypatch.setattr(progan.layers, "FUSED_MIN_POSITIONS_CPU", 0)  # take the fused path even for tiny inputs
    torch.manual_seed(1)
    conv = EqualizedConv2d(5, 6, 3, up=direction == "up", down=direction == "down", fused=True)
    conv.bias.data.normal_()
    x = torch.randn(3, 5, 8, 8)
    assert fused_pays_off(x, conv.down)
    fused = conv(x)
    conv.fused = False
    unfused = conv(x)
    assert fused.shape == unfused.shape == (3, 6, 16, 16) if direction == "up" else (3, 6, 4, 4)
    torch.testing.assert_close(fused, unfused, rtol=1e-5, atol=1e-5)


def test_fused_kernels_by_hand():
    w = torch.arange(9.0).view(1, 1, 3, 3)
    x = torch.randn(1, 1, 6, 6)
    up, down = fused_kernel(w, fused_shifts(up=True), up=True), fused_kernel(w, fused_shifts(up=False), up=False)
    torch.testing.assert_close(F.conv_transpose2d(x, up, stride=2, padding=1),
                               F.conv2d(upsample2x(x), w, padding=1), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(F.conv2d(x, down, stride=2, padding=1),
                               downsample2x(F.conv2d(x, w, padding=1)), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("positions", [0, 1 << 30])  # every fused conv taking the fused form, none
def test_inference_copy_computes_what_the_layers_do(fused, positions, monkeypatch):
    """The studio's frozen generator: scaled weights and fused kernels computed once, the same outputs (not
    bit-identical: the layers scale whichever of input and weight is smaller)."""
    import progan.layers
    from progan.config import ModelConfig
    from progan.networks import Generator
    monkeypatch.setattr(progan.layers, "FUSED_MIN_POSITIONS_CPU", positions)
    torch.manual_seed(0)
    G = Generator(ModelConfig(resolution=32, latent_size=16, fmap_base=64, fmap_max=16, fused_scale=fused)).eval()
    for p in G.parameters():
        p.data.normal_()  # biases too, so a bias dropped or doubled shows
    frozen = inference_copy(G)
    z = torch.randn(4, 16)
    with torch.inference_mode():
        for lod in (0.0, 0.4, 2.0):
            torch.testing.assert_close(frozen(z, lod), G(z, lod), rtol=1e-4, atol=1e-4)
    assert not any(p.requires_grad for p in frozen.parameters())
    assert isinstance(G.blocks[0].conv0, EqualizedConv2d) and all(p.requires_grad for p in G.parameters())
