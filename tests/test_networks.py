import pytest
import torch
import torch.nn.functional as F

from progan.config import ModelConfig
from progan.presets import paper
from progan.layers import downsample2x, pixel_norm, upsample2x
from progan.lod import level_and_alpha
from progan.networks import Discriminator, Generator, count_parameters

CFG = ModelConfig(resolution=16, latent_size=8, fmap_base=64, fmap_max=16, mbstd_group=4)


def test_paper_channel_counts_and_size():
    cfg = paper(1024).model
    assert [cfg.channels(r) for r in (4, 8, 16, 32, 64, 128, 256, 512, 1024)] == \
        [512, 512, 512, 512, 256, 128, 64, 32, 16]
    # the paper reports 23.1M parameters in each network
    assert count_parameters(Generator(cfg)) == pytest.approx(23.1e6, rel=0.01)
    assert count_parameters(Discriminator(cfg)) == pytest.approx(23.1e6, rel=0.01)


def test_fmap_min_floors_only_the_narrow_top_levels():
    cfg = ModelConfig(resolution=32, latent_size=8, fmap_base=256, fmap_max=64, fmap_min=32)
    assert [cfg.channels(r) for r in (4, 8, 16, 32)] == [64, 64, 32, 32]
    G, D = Generator(cfg), Discriminator(cfg)
    images = G(torch.randn(2, 8), 0.0)
    assert images.shape == (2, 3, 32, 32) and D(images, 0.0).shape == (2, 1)
    assert G.to_rgb[-1].weight.shape[1] == 32 and D.from_rgb[-1].weight.shape[0] == 32
    with pytest.raises(Exception, match="fmap_min"):
        ModelConfig(resolution=32, fmap_min=0).validate()


def test_g_fmap_min_widens_only_the_generator():
    cfg = ModelConfig(resolution=32, latent_size=8, fmap_base=256, fmap_max=64, g_fmap_min=32)
    G, D = Generator(cfg), Discriminator(cfg)
    assert G.to_rgb[-1].weight.shape[1] == 32 and D.from_rgb[-1].weight.shape[0] == 16
    assert D(G(torch.randn(2, 8), 0.0), 0.0).shape == (2, 1)


def test_output_shapes_and_linear_to_rgb():
    G, D = Generator(CFG), Discriminator(CFG)
    z = torch.randn(8, 8)
    for lod, res in [(2.0, 4), (1.5, 8), (1.0, 8), (0.2, 16), (0.0, 16)]:
        img = G(z, lod)
        assert img.shape == (8, 3, res, res)
        assert D(img, lod).shape == (8, 1)
    assert G(z * 10, 0.0).abs().max() > 0  # linear output: nothing clamps it
    torch.testing.assert_close(G(z * 10, 0.0), G(z, 0.0), rtol=1e-4, atol=1e-5)  # z is pixel-normalised


def test_generator_fade_in_is_continuous():
    """alpha = 0 at the new resolution reproduces the previous resolution's output, upsampled, exactly."""
    torch.manual_seed(0)
    G = Generator(CFG)
    z = torch.randn(4, 8)
    for level in (1, 2):
        low = G.forward_at(z, level - 1, 1.0)
        new_at_zero = G.forward_at(z, level, 0.0 + 1e-12 * 0)
        torch.testing.assert_close(new_at_zero, upsample2x(low), rtol=0, atol=0)
        # alpha slightly above 0 is close to it: no jump at the phase boundary
        near = G.forward_at(z, level, 1e-4)
        assert (near - upsample2x(low)).abs().max() < 1e-3
        assert not torch.equal(G.forward_at(z, level, 1.0), upsample2x(low))


def test_discriminator_fade_in_is_continuous():
    torch.manual_seed(0)
    D = Discriminator(CFG)
    img = torch.randn(8, 3, 16, 16)
    torch.testing.assert_close(D.forward_at(img, 2, 0.0), D.forward_at(downsample2x(img), 1, 1.0))
    assert (D.forward_at(img, 2, 1e-4) - D.forward_at(downsample2x(img), 1, 1.0)).abs().max() < 1e-3


def test_lod_out_of_range_and_wrong_image_size_rejected():
    G, D = Generator(CFG), Discriminator(CFG)
    with pytest.raises(ValueError, match="lod must be in"):
        G(torch.randn(2, 8), 3.0)
    with pytest.raises(ValueError, match="expects 8x8"):
        D(torch.randn(4, 3, 16, 16), 1.0)
    assert level_and_alpha(1.25, 16) == (1, 0.75)


def test_fused_and_unfused_networks_agree():
    torch.manual_seed(0)
    fused_cfg = ModelConfig(**{**CFG.__dict__, "fused_scale": True})
    plain_cfg = ModelConfig(**{**CFG.__dict__, "fused_scale": False})
    G1, G2 = Generator(fused_cfg), Generator(plain_cfg)
    G2.load_state_dict(G1.state_dict())
    D1, D2 = Discriminator(fused_cfg), Discriminator(plain_cfg)
    D2.load_state_dict(D1.state_dict())
    z = torch.randn(4, 8)
    torch.testing.assert_close(G1(z, 0.3), G2(z, 0.3), rtol=1e-4, atol=1e-5)
    img = torch.randn(4, 3, 16, 16)
    torch.testing.assert_close(D1(img, 0.3), D2(img, 0.3), rtol=1e-4, atol=1e-5)


def test_unconditional_networks_keep_their_parameters_and_formulas():
    """Exported unconditional models must load and give the same images: the same parameter names and shapes as
    before conditioning existed, and the same maths (written out here from the paper's recipe)."""
    torch.manual_seed(0)
    G, D = Generator(CFG), Discriminator(CFG)
    c4 = CFG.channels(4)
    g_params = {k: tuple(v.shape) for k, v in G.state_dict().items()}
    assert {k: s for k, s in g_params.items() if not k.startswith(("blocks.", "to_rgb."))} == {
        "dense.weight": (c4 * 16, CFG.latent_size), "dense_bias": (c4,), "conv4.weight": (c4, c4, 3, 3),
        "conv4.bias": (c4,)}
    d_params = {k: tuple(v.shape) for k, v in D.state_dict().items()}
    assert d_params["dense1.weight"] == (1, c4) and not any(k.startswith(("project", "ca")) for k in d_params)
    # a conditional text model only adds its own layers
    text = ModelConfig(**{**CFG.__dict__, "text_size": 6, "ca_size": 4})
    added = set(Generator(text).state_dict()) - set(G.state_dict())
    assert added == {"ca.weight", "ca.bias"}
    assert set(Discriminator(text).state_dict()) - set(D.state_dict()) == {"project.weight"}

    z = torch.randn(4, 8)
    x = pixel_norm(z)
    x = F.linear(x, G.dense.weight * (2**0.5 / 4) / CFG.latent_size**0.5).view(4, c4, 4, 4)
    x = pixel_norm(F.leaky_relu(x + G.dense_bias.view(1, -1, 1, 1), 0.2))
    torch.testing.assert_close(G.embed(z), x)
    x = pixel_norm(F.leaky_relu(F.conv2d(x, G.conv4.weight * (2 / (9 * c4)) ** 0.5, G.conv4.bias, padding=1), 0.2))
    img = F.conv2d(x, G.to_rgb[0].weight / c4**0.5, G.to_rgb[0].bias)
    torch.testing.assert_close(G(z, 2.0), img, rtol=1e-5, atol=1e-6)

    # D's 4x4 head: the score is dense1(LReLU(dense0(...))) and nothing else
    seen = {}
    D.dense1.register_forward_hook(lambda m, inp, out: seen.update(h=inp[0]))
    score = D(torch.randn(4, 3, 4, 4), 2.0)
    torch.testing.assert_close(score, F.linear(seen["h"], D.dense1.weight / c4**0.5, D.dense1.bias))
