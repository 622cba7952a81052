"""How a stream moves: slerp, seeds and the endless latent walk."""

import torch

from progan.generate import normalize, seed_latent, slerp
from progan.studio.motion import LatentWalk


def test_slerp_endpoints_norm_and_parallel_rows():
    a, b = torch.randn(4, 64), torch.randn(4, 64)
    torch.testing.assert_close(slerp(a, b, 0.0), normalize(a))
    torch.testing.assert_close(slerp(a, b, 1.0), normalize(b), atol=1e-5, rtol=0)
    mid = slerp(a, b, 0.3)
    torch.testing.assert_close(mid.norm(dim=1), torch.full((4,), 8.0))
    # equal angles to both ends at t = 0.5
    half = slerp(a, b, 0.5)
    cos_a = (half * normalize(a)).sum(1)
    cos_b = (half * normalize(b)).sum(1)
    torch.testing.assert_close(cos_a, cos_b, atol=1e-3, rtol=0)
    assert torch.isfinite(slerp(a, a * 3, 0.4)).all()  # parallel rows do not divide by zero


def test_walk_is_continuous_and_endless():
    rng = torch.Generator().manual_seed(1)
    walk = LatentWalk(lambda n: torch.randn(n, 64, generator=rng))
    prev = walk.position()
    biggest = 0.0
    for _ in range(300):  # 300 small steps cross many keyframes
        walk.advance(0.05)
        here = walk.position()
        biggest = max(biggest, (here - prev).norm().item())
        prev = here
    assert biggest < 1.5  # no jumps (a jump between random latents is about sqrt(2) * 8 = 11)
    assert torch.isfinite(prev).all()


def test_walk_jump_stands_exactly_on_the_latent_and_lanes_change():
    rng = torch.Generator().manual_seed(1)
    walk = LatentWalk(lambda n: torch.randn(n, 64, generator=rng))
    z = seed_latent(7, 64).view(1, -1)
    walk.jump(z)
    torch.testing.assert_close(walk.position(), normalize(z))
    walk.set_lanes(9)
    assert walk.position().shape == (9, 64)
    torch.testing.assert_close(walk.position()[0], normalize(z)[0])  # lane 0 goes on from where it was
    walk.set_lanes(1)
    assert walk.position().shape == (1, 64)


def test_seed_latent_is_reproducible():
    assert torch.equal(seed_latent(5, 64), seed_latent(5, 64))
    assert not torch.equal(seed_latent(5, 64), seed_latent(6, 64))
