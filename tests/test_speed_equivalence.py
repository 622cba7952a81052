"""The speed work changes how things are computed, never what: the optimised code against the textbook form."""

import collections
import copy
import importlib
import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

import progan.layers as layers
from progan.config import LossConfig, ModelConfig
from progan.presets import preset
from progan.layers import (EqualizedConv2d, EqualizedLinear, LeakyReLU, downsample2x, fused_kernel, fused_pays_off,
                           fused_shifts, scale_smaller, upsample2x)
from progan.losses import discriminator_loss, gradient_penalty, r1_penalty
from progan.networks import Discriminator, Generator
from progan.schedule import Phase
from progan.train import checkpoint as ckpt
from progan.train import loop
from progan.train.distributed import Ranks
from progan.train.loop import build_state, train_step


def load_benchmark(name):
    """benchmarks.NAME (the repository root is on pytest's path: pyproject.toml)."""
    return importlib.import_module(f"benchmarks.{name}")


reference = load_benchmark("reference")  # the textbook form of every layer
to_reference = reference.to_reference


def small_config():
    """16x16, batch 16: every resampling conv takes the fused form (enough positions even on a CPU); G's dense layer
    and the 4x4 convs at batch 16 scale their input, D's 4x4 conv over reals + fakes (32) and the bigger convs their
    weight."""
    cfg = preset("tiny", 16)
    cfg.model = ModelConfig(resolution=16, latent_size=16, fmap_base=128, fmap_max=32, mbstd_group=4)
    return cfg


@pytest.fixture(autouse=True)
def one_thread():
    """These networks are tiny: a second thread buys nothing, and OpenMP's spin-waiting threads lose a scheduler
    tick on every operation whenever another process holds the other core."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def float64():
    """Leaky ReLU and the gradient penalty turn float32 rounding into visible differences wherever a pre-activation
    sits next to 0 (its mask flips), so the exact-maths checks run in float64, where only a real difference shows."""
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(before)


def states(cfg, lr):
    opt = build_state(cfg, torch.device("cpu"))
    ref = copy.deepcopy(opt)
    for net in ref.nets.values():
        to_reference(net)
    for st in (opt, ref):  # SGD: the weights after a step are a plain function of the gradients
        st.opt_G = torch.optim.SGD(st.G.parameters(), lr=lr)
        st.opt_D = torch.optim.SGD(st.D.parameters(), lr=lr)
    return ref, opt


def assert_params_close(a: torch.nn.Module, b: torch.nn.Module, grads: bool = False, **tol):
    for (name, p), (_, q) in zip(a.named_parameters(), b.named_parameters()):
        x, y = (p.grad, q.grad) if grads else (p, q)
        if x is None or y is None:
            assert x is None and y is None, name
            continue
        torch.testing.assert_close(x, y, msg=lambda m: f"{name}: {m}", **tol)


def takes_fused(conv: EqualizedConv2d, x: torch.Tensor) -> bool:
    """Whether conv(x) runs the fused form: a single strided (transposed) convolution, no resampling pass."""
    with CountOps() as ops:
        conv(x)
    resampled = ops.counts["upsample_nearest2d"] + ops.counts["avg_pool2d"]
    fused = (conv.up or conv.down) and ops.counts["convolution"] == 1 and not resampled
    assert fused == (conv.fused and fused_pays_off(x, conv.down))  # the rule and what ran agree
    return fused


def test_fused_form_taken_where_the_rule_says():
    cfg = small_config().model
    G, D = Generator(cfg), Discriminator(cfg)
    assert takes_fused(G.blocks[0].conv0, torch.empty(16, 32, 4, 4))       # 4x4 -> 8x8 up-conv
    assert takes_fused(G.blocks[1].conv0, torch.empty(16, 32, 8, 8))       # 8x8 -> 16x16
    assert takes_fused(D.blocks[1].conv1, torch.empty(16, 16, 16, 16))     # 16x16 -> 8x8 down-conv
    assert takes_fused(D.blocks[0].conv1, torch.empty(16, 32, 8, 8))       # 8x8 -> 4x4
    assert not takes_fused(D.blocks[0].conv1, torch.empty(8, 32, 8, 8))    # too few positions for a CPU


@pytest.mark.parametrize("lod", [0.0, 0.5, 1.0])  # stable 16x16, fading 16x16 in, stable 8x8
def test_train_step_losses_and_gradients_match_reference(lod, float64):
    """One full step (D with gradient penalty, G, EMA) with lr 0: the same losses and the same gradients."""
    cfg = small_config()
    ref, opt = states(cfg, lr=0.0)
    res = 16 if lod < 1 else 8
    phase = Phase(kimg=0, lod=lod, resolution=res, alpha=1 - (lod - math.floor(lod)), batch=16, lr=0.0)
    real = torch.rand(16, 3, res, res, generator=torch.Generator().manual_seed(1)) * 2 - 1
    a = train_step(ref, phase, real, cfg, Ranks())
    b = train_step(opt, phase, real, cfg, Ranks())
    for key in ("loss_d", "loss_g", "d_real", "d_fake", "gp"):
        torch.testing.assert_close(a[key], b[key], rtol=1e-10, atol=1e-12, msg=key)
    assert a["ok"] and b["ok"]
    # D keeps its D-step gradients (frozen during G's step); G holds its G-step gradients
    assert_params_close(ref.D, opt.D, grads=True, rtol=1e-9, atol=1e-12)
    assert_params_close(ref.G, opt.G, grads=True, rtol=1e-9, atol=1e-12)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in opt.D.from_rgb.parameters())


def test_three_training_steps_track_the_reference(float64):
    cfg = small_config()
    ref, opt = states(cfg, lr=0.01)
    for step, lod in enumerate([0.6, 0.4, 0.0]):
        ref.progress.cur_nimg = opt.progress.cur_nimg = 16 * step
        phase = Phase(kimg=0, lod=lod, resolution=16, alpha=1 - (lod - math.floor(lod)), batch=16, lr=0.01)
        real = torch.rand(16, 3, 16, 16, generator=torch.Generator().manual_seed(step)) * 2 - 1
        a, b = train_step(ref, phase, real, cfg, Ranks()), train_step(opt, phase, real, cfg, Ranks())
        torch.testing.assert_close(a["loss_d"], b["loss_d"], rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(a["loss_g"], b["loss_g"], rtol=1e-10, atol=1e-12)
    for name in ("G", "D", "G_ema"):
        assert_params_close(ref.nets[name], opt.nets[name], rtol=1e-9, atol=1e-12)


def test_float32_step_matches_reference_within_rounding():
    """As training runs it: float32, where the two differ only by rounding."""
    cfg = small_config()
    ref, opt = states(cfg, lr=0.0)
    phase = Phase(kimg=0, lod=0.5, resolution=16, alpha=0.5, batch=16, lr=0.0)
    real = torch.rand(16, 3, 16, 16, generator=torch.Generator().manual_seed(2)) * 2 - 1
    a, b = train_step(ref, phase, real, cfg, Ranks()), train_step(opt, phase, real, cfg, Ranks())
    for key in ("loss_d", "loss_g", "d_real", "d_fake", "gp"):
        torch.testing.assert_close(a[key], b[key], rtol=1e-3, atol=1e-4, msg=key)


@pytest.mark.parametrize("direction", ["up", "down"])
def test_fused_and_plain_conv_agree_to_second_order(direction, monkeypatch, float64):
    """Outputs, first gradients and the gradient penalty's double backward, fused against the textbook form."""
    monkeypatch.setattr(layers, "FUSED_MIN_POSITIONS_CPU", 0)
    torch.manual_seed(0)
    conv = EqualizedConv2d(6, 5, 3, up=direction == "up", down=direction == "down")
    conv.bias.data.normal_()
    plain = to_reference(torch.nn.Sequential(copy.deepcopy(conv)))[0]
    x = torch.randn(4, 6, 8, 8)
    assert takes_fused(conv, x)

    def penalty_grads(layer):
        xg = x.clone().requires_grad_(True)
        y = layer(xg)
        (g,) = torch.autograd.grad(F.leaky_relu(y, 0.2).square().sum(), xg, create_graph=True)
        loss = g.square().sum() + y.mean()
        return (y, *torch.autograd.grad(loss, [xg, layer.weight, layer.bias]))

    for u, v in zip(penalty_grads(conv), penalty_grads(plain)):
        torch.testing.assert_close(u, v, rtol=1e-10, atol=1e-12)


def test_fused_rule_on_cpu(monkeypatch):
    up = EqualizedConv2d(8, 8, 3, up=True)
    down = EqualizedConv2d(8, 8, 3, down=True)
    n = layers.FUSED_MIN_POSITIONS_CPU
    assert takes_fused(up, torch.empty(n // 16, 8, 4, 4)) and not takes_fused(up, torch.empty(n // 16 - 1, 8, 4, 4))
    # a down-conv's positions are those of its (low-resolution) output
    assert takes_fused(down, torch.empty(n // 16, 8, 8, 8))
    assert not takes_fused(down, torch.empty(n // 16 - 1, 8, 8, 8))
    assert not takes_fused(EqualizedConv2d(8, 8, 3, up=True, fused=False), torch.empty(4096, 8, 4, 4))
    assert not EqualizedConv2d(8, 8, 3).fused


def test_fused_kernels_equal_the_pad_and_add_definition():
    w = torch.randn(5, 3, 3, 3, dtype=torch.float64)
    p = F.pad(w, (1, 1, 1, 1))
    summed = p[..., 1:, 1:] + p[..., :-1, 1:] + p[..., 1:, :-1] + p[..., :-1, :-1]
    torch.testing.assert_close(fused_kernel(w, fused_shifts(up=False), up=False), summed * 0.25)
    torch.testing.assert_close(fused_kernel(w, fused_shifts(up=True), up=True), summed.flip(-1, -2).transpose(0, 1))
    # and the layer's folded-in scale gives the same kernel as scaling first
    for direction in ("up", "down"):
        conv = EqualizedConv2d(3, 5, 3, up=direction == "up", down=direction == "down").double()
        torch.testing.assert_close(conv.fused_kernel(),
                                   fused_kernel(conv.weight * conv.scale, fused_shifts(conv.up), conv.up))


@pytest.mark.parametrize("batch", [1, 64])  # input smaller than the weight, then larger
def test_scaling_the_input_or_the_weight_is_the_same(batch):
    x, w = torch.randn(batch, 32, 4, 4), torch.randn(32, 32, 3, 3)
    xs, ws = scale_smaller(x, w, 0.1)
    assert (xs is x) != (ws is w)
    torch.testing.assert_close(F.conv2d(xs, ws, padding=1), F.conv2d(x, w * 0.1, padding=1), rtol=1e-5, atol=1e-6)
    lin = EqualizedLinear(64, 128)
    lin.bias.data.normal_()
    z = torch.randn(batch, 64)
    torch.testing.assert_close(lin(z), F.linear(z, lin.weight * lin.scale, lin.bias), rtol=1e-5, atol=1e-6)


def test_reference_layers_are_the_textbook_form():
    """The reference itself, against the definitions written out here (it shares the parameters it replaces)."""
    x = torch.randn(64, 4, 8, 8)
    for direction in ("up", "down"):
        net = torch.nn.Sequential(EqualizedConv2d(4, 6, 3, up=direction == "up", down=direction == "down"),
                                  LeakyReLU(), torch.nn.Flatten(), EqualizedLinear(6 * 16**2 if direction == "up"
                                                                                   else 6 * 4**2, 3))
        conv, lin = net[0], net[3]
        to_reference(net)
        assert isinstance(net[0], reference.ReferenceConv2d) and isinstance(net[1], torch.nn.LeakyReLU)
        assert net[0].weight is conv.weight and net[3].weight is lin.weight
        w = conv.weight * conv.scale
        y = (F.conv2d(upsample2x(x), w, conv.bias, padding=1) if direction == "up"
             else downsample2x(F.conv2d(x, w, conv.bias, padding=1)))
        expected = F.linear(F.leaky_relu(y, 0.2).flatten(1), lin.weight * lin.scale, lin.bias)
        torch.testing.assert_close(net(x), expected)


def test_train_speed_benchmark_runs_and_counts_flops(tmp_path, capsys):
    bench = load_benchmark("train_speed")
    out = tmp_path / "train.json"
    assert bench.main(["--preset", "tiny", "--resolution", "8", "--steps", "1", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert [r["resolution"] for r in result["rows"]] == [4, 8]
    for row in result["rows"]:
        ref, opt = row["modes"]["reference"], row["modes"]["optimised"]
        assert ref["images_per_sec"] > 0 and opt["images_per_sec"] > 0 and row["matmul_gflops"] > 0
        # the per-operation count (double backward included) agrees with the analytic count of the reference
        assert ref["gflop_per_image"] == pytest.approx(row["analytic_reference_gflop_per_image"], rel=0.1)
        assert ref["seconds"] and len(ref["seconds"]) == len(opt["seconds"]) == 1
        assert ref["loss_d"] == pytest.approx(opt["loss_d"], rel=1e-4, abs=1e-5)
        assert sum(opt["profile_seconds"].values()) > 0 and row["speedup_ceiling"] > 0
    # at 4x4 (nothing to fuse) the optimised mode saves the D head's backward on zeros: twice its forward
    _, _, head = bench.forward_flops(bench.preset("tiny", 8), 4, fused=False)
    four = result["rows"][0]["modes"]
    saved = (four["reference"]["gflop_per_image"] - four["optimised"]["gflop_per_image"]) * 1e9
    assert saved == pytest.approx(2 * head, rel=1e-2)
    # each mode ran in its own process, the optimised one with the library's process settings
    assert result["machine"]["optimised_process"]["keep_freed_memory"] is True
    assert result["machine"]["reference_process"]["keep_freed_memory"] is False
    assert "speedup" in capsys.readouterr().out


def test_generate_speed_benchmark_runs(tmp_path):
    bench = load_benchmark("generate_speed")
    out = tmp_path / "gen.json"
    assert bench.main(["--models", "tiny:8", "--repeats", "2", "--big-batch", "4", "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert {(r["model"], r["resolution"]) for r in rows} == {("tiny", 4), ("tiny", 8)}
    assert all(r["batch1_ms"]["optimised"] > 0 and r["big_batch_images_per_sec"]["optimised"] > 0 for r in rows)


def test_fused_adam_is_the_for_loop_update_within_rounding():
    cfg = small_config()
    G = Generator(cfg.model)
    fused = loop.make_optimizer(G, 0.01, cfg)
    assert fused.defaults["fused"]  # the library's choice on a CPU
    G_ref = copy.deepcopy(G)
    plain = torch.optim.Adam(G_ref.parameters(), lr=0.01, betas=cfg.adam_betas, eps=cfg.adam_eps, foreach=False)
    gen = torch.Generator().manual_seed(0)
    for _ in range(3):
        for p, q in zip(G.parameters(), G_ref.parameters()):
            p.grad = torch.randn(p.shape, generator=gen)
            q.grad = p.grad.clone()
        fused.step()
        plain.step()
    assert_params_close(G, G_ref, rtol=1e-5, atol=1e-6)
    assert any((p - q0).abs().max() > 1e-3 for p, q0 in zip(G.parameters(), Generator(cfg.model).parameters()))


def test_checkpoint_keeps_the_running_optimizer_implementation(tmp_path):
    """A checkpoint written by a for-loop Adam (an older run, another machine) resumes into the fused one."""
    cfg = small_config()
    G = Generator(cfg.model)
    old = torch.optim.Adam(G.parameters(), lr=0.01, betas=cfg.adam_betas, eps=cfg.adam_eps, foreach=False)
    for p in G.parameters():
        p.grad = torch.ones_like(p)
    old.step()
    tensors, groups = ckpt.optimizer_tensors(old)
    assert groups[0]["fused"] is None
    new = loop.make_optimizer(G, 0.01, cfg)
    ckpt.load_optimizer(new, tensors, json.loads(json.dumps(groups)))
    assert new.param_groups[0]["fused"] is True and new.param_groups[0]["lr"] == 0.01
    first = next(iter(G.parameters()))
    torch.testing.assert_close(new.state[first]["exp_avg_sq"], old.state[first]["exp_avg_sq"])


def test_masked_leaky_relu_is_torchs_to_second_order(float64):
    x = torch.randn(3, 4, 5, 5, requires_grad=True)
    act = LeakyReLU()
    torch.testing.assert_close(act(x), F.leaky_relu(x, 0.2))
    assert torch.autograd.gradcheck(act, (x,)) and torch.autograd.gradgradcheck(act, (x,))
    with torch.inference_mode():  # generation: no graph at all
        torch.testing.assert_close(act(x.detach()), F.leaky_relu(x.detach(), 0.2))


def test_masked_leaky_relu_skips_the_d_heads_backward_on_zeros(float64):
    """The penalty's double backward: the same D gradients with fewer convolution backward passes."""
    cfg = small_config().model
    D = Discriminator(cfg)
    plain = to_reference(copy.deepcopy(D))
    real, fake = torch.randn(8, 3, 4, 4), torch.randn(8, 3, 4, 4)
    mix = torch.rand(8, 1, 1, 1)
    level_lod = float(math.log2(cfg.resolution) - 2)  # 4x4: nothing fused, the activations are the only difference

    def penalty_grads(net):
        net.zero_grad(set_to_none=True)
        with CountOps() as ops:
            gradient_penalty(net, real, fake, level_lod, mix, 1.0).sum().backward()
        # a weight the penalty reaches only through torch's zeros gets an all-zero gradient there, none here
        return {n: torch.zeros_like(p) if p.grad is None else p.grad for n, p in net.named_parameters()}, ops.counts

    (masked, masked_ops), (torchs, torch_ops) = penalty_grads(D), penalty_grads(plain)
    for name, grad in masked.items():
        torch.testing.assert_close(grad, torchs[name], rtol=1e-10, atol=1e-12, msg=name)
    assert any(g.abs().sum() > 0 for g in masked.values())
    assert masked_ops["convolution_backward"] < torch_ops["convolution_backward"]


class CountOps(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.counts = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.counts[func._overloadpacket.__name__] += 1
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("kind", ["wgan", "logistic"])
@pytest.mark.parametrize("lod", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("batch, group", [(8, 4), (16, 16), (6, 2)])
def test_mismatched_pairs_reusing_the_reals_features_are_a_fourth_call(kind, lod, batch, group, float64):
    """The loss scores (real image, wrong caption) pairs from the reals' own features: D's value and every weight's
    gradient must equal scoring them in a separate call, as the loss did before: both losses, mid-fade, and
    batches and minibatch-stddev groups of the presets' kinds."""
    torch.manual_seed(0)
    cfg = ModelConfig(resolution=8, latent_size=8, fmap_base=32, fmap_max=8, mbstd_group=group, text_size=6)
    D = Discriminator(cfg)
    real, fake, mix = torch.randn(batch, 3, 8, 8), torch.randn(batch, 3, 8, 8), torch.rand(batch, 1, 1, 1)
    cond, wrong = F.normalize(torch.randn(batch, 6), dim=1), F.normalize(torch.randn(batch, 6), dim=1)
    mask = (torch.arange(batch) % 3 != 2).float()  # the loss scores in float32; some pairs have no wrong caption
    loss_cfg = LossConfig(kind=kind, mismatch_weight=0.25)
    res = 8 if lod < 1 else 4
    real, fake = F.avg_pool2d(real, 8 // res), F.avg_pool2d(fake, 8 // res)

    loss, _ = discriminator_loss(D, real, fake, lod, mix, loss_cfg, cond, wrong, mask)
    got = torch.autograd.grad(loss, list(D.parameters()), materialize_grads=True)

    d_real, d_fake, d_wrong = (D(x, lod, c).float()[:, 0] for x, c in ((real, cond), (fake, cond), (real, wrong)))
    if kind == "logistic":
        base = F.softplus(d_fake) + F.softplus(-d_real) + loss_cfg.r1_gamma / 2 * r1_penalty(D, real, lod, cond)
        term = F.softplus(d_wrong)
    else:
        base = d_fake - d_real + loss_cfg.gp_lambda * gradient_penalty(D, real, fake, lod, mix, loss_cfg.gp_gamma, cond)
        base = base + loss_cfg.drift * d_real.square()
        term = d_wrong - d_real + loss_cfg.drift * d_wrong.square()
    expected = (base + 0.25 * term * mask).mean()
    want = torch.autograd.grad(expected, list(D.parameters()), materialize_grads=True)
    torch.testing.assert_close(loss, expected)
    for name, g, w in zip((n for n, _ in D.named_parameters()), got, want):
        torch.testing.assert_close(g, w, msg=lambda m, name=name: f"{name}: {m}")
