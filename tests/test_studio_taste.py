"""Likes and dislikes steer where new keyframes are drawn."""

import pytest
import torch

from progan.studio.taste import Preferences


def test_likes_pull_new_keyframes_toward_the_liked_image():
    basis = torch.linalg.qr(torch.randn(64, 8))[0].T  # 8 orthonormal directions
    prefs = Preferences(basis)
    liked = torch.randn(64)
    target = prefs.coords(liked.view(1, -1))[0]
    rng = torch.Generator().manual_seed(0)
    before = (prefs.coords(prefs.sample(512, rng)) - target).norm(dim=1).mean()
    for _ in range(3):
        prefs.like(liked)
    after = (prefs.coords(prefs.sample(512, rng)) - target).norm(dim=1).mean()
    assert prefs.likes == 3
    assert after < 0.5 * before
    # coordinates outside the basis stay random: the stream keeps changing
    samples = prefs.sample(512, rng)
    rest = samples - (samples @ basis.T) @ basis
    assert rest.std() == pytest.approx(1.0, rel=0.1)
    prefs.dislike(liked)
    assert prefs.dislikes == 1
    prefs.reset()
    assert prefs.likes == 0 and prefs.point.abs().sum() == 0


def test_dislikes_push_keyframes_away():
    basis = torch.eye(64)[:8]
    prefs = Preferences(basis)
    disliked = torch.zeros(64)
    disliked[:8] = 2.0
    rng = torch.Generator().manual_seed(0)
    for _ in range(2):
        prefs.dislike(disliked)
    c = prefs.coords(prefs.sample(512, rng))
    assert (c.mean(0) < 0).all()  # moved away from the disliked corner
