"""The faults a GPU user meets days into a paper-scale run, each checked here on the CPU."""

import json

import pytest
import torch

from progan import networks
from progan.config import ConfigError, ScheduleConfig, TrainConfig, resolutions_up_to
from progan.presets import PRESETS, check_batches, preset
from progan.losses import discriminator_loss
from progan.schedule import kimg_to_reach, lod_at, phase_at, schedule_warnings
from progan.train.log import forget_after
from progan.train.resume import resume_changes

RESOLUTIONS = [2**k for k in range(2, 11)]


# --- fault 1: minibatch-stddev groups never mix reals with fakes -------------------------------------------------

def test_discriminator_never_scores_reals_and_fakes_in_one_call(monkeypatch):
    """D is called on the reals, the fakes and their mix separately, so every group is all real or all fake; with
    the paper's group of 16 and the 256x256 batch of 14 the old concatenated call (28 images) could not even
    split into groups."""
    cfg = preset("paper", 8)
    cfg.model.fmap_base, cfg.model.fmap_max, cfg.model.latent_size = 64, 8, 8
    D = networks.Discriminator(cfg.model)
    seen = []
    real_mbstd = networks.minibatch_stddev

    def recording(x, group):
        seen.append((x.shape[0], min(group, x.shape[0])))
        return real_mbstd(x, group)

    monkeypatch.setattr(networks, "minibatch_stddev", recording)
    real, fake = torch.randn(14, 3, 8, 8), torch.randn(14, 3, 8, 8) * 0.1
    loss, _ = discriminator_loss(D, real, fake, 0.0, torch.rand(14, 1, 1, 1), cfg.loss)
    loss.backward()
    assert seen and all(n == 14 and n % g == 0 for n, g in seen), seen


# --- fault 2: every preset reaches its resolution and stabilises there -------------------------------------------

@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_trains_at_lod_0_at_every_resolution(name):
    for res in RESOLUTIONS:
        cfg = preset(name, res)
        last = phase_at(round(cfg.schedule.total_kimg * 1000) - 1, res, cfg.schedule)
        assert last.resolution == res and last.lod == 0.0, (name, res, last)
        assert schedule_warnings(cfg) == []


def test_paper_preset_is_the_papers_19000_kimg_with_1024_faded_in_at_12800():
    s = preset("paper", 1024).schedule
    assert s.total_kimg == 19000 and kimg_to_reach(1024, s) == 12800
    assert phase_at(12_800_000 - 16, 1024, s).lod > 0 and phase_at(12_800_000, 1024, s).lod == 0


def test_a_total_that_stops_before_the_resolution_is_reported():
    cfg = preset("paper", 1024)
    cfg.schedule.total_kimg = 12000
    (warning,) = schedule_warnings(cfg)
    assert "12000" in warning and "12800" in warning and "lod 0" in warning


def test_per_resolution_phase_tables():
    # constant tables are the official formula
    for kimg in (0, 599.999, 600, 900, 1200, 5000.5, 1e5):
        assert lod_at(kimg, 1024, {4: 600}, {4: 600}) == pytest.approx(lod_at(kimg, 1024, 600, 600))
    s = ScheduleConfig(stabilize_kimg={4: 1, 16: 3}, fade_kimg={8: 2, 16: 4}, batch={4: 4}, total_kimg=100)
    # stabilise 4 (1), fade 8 (2), stabilise 8 (1), fade 16 (4), stabilise 16 (3), fade 32 (4), stabilise 32
    assert lod_at(0.5, 32, s.stabilize_kimg, s.fade_kimg) == 3
    assert lod_at(2.0, 32, s.stabilize_kimg, s.fade_kimg) == pytest.approx(2.5)
    assert lod_at(3.5, 32, s.stabilize_kimg, s.fade_kimg) == 2
    assert lod_at(6.0, 32, s.stabilize_kimg, s.fade_kimg) == pytest.approx(1.5)
    assert lod_at(9.5, 32, s.stabilize_kimg, s.fade_kimg) == 1
    assert kimg_to_reach(32, s) == 15 and lod_at(15, 32, s.stabilize_kimg, s.fade_kimg) == 0
    # the tables survive the JSON round trip of config.json
    cfg = TrainConfig(schedule=s)
    again = TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again.schedule == s


# --- fault 4: process counts --------------------------------------------------------------------------------------

def test_eight_processes_refuse_the_paper_table_and_say_what_works():
    with pytest.raises(ConfigError) as e:
        check_batches(preset("paper", 1024), 8)
    message = str(e.value)
    assert "batch 14 at 256x256 is not divisible by the 8 processes" in message
    assert "--preset v2-8gpu" in message and "process counts that work with this table: 1" in message


@pytest.mark.parametrize("gpus", [1, 2, 4, 8])
def test_v2_presets_split_at_every_resolution_for_their_gpu_count(gpus):
    cfg = preset(f"v2-{gpus}gpu", 1024)
    check_batches(cfg, gpus)
    for res in resolutions_up_to(1024):
        local = cfg.schedule.batch_at(res) // gpus
        assert local >= 4 and local <= {256: 16, 512: 8, 1024: 4}.get(res, 1 << 20)  # the official fp32 caps


def test_v2_tables_are_the_official_ones():
    s = preset("v2-4gpu").schedule
    assert [s.batch_at(r) for r in RESOLUTIONS] == [512, 256, 128, 64, 32, 16, 16, 16, 16]
    assert [s.lr_at(r) for r in (128, 256, 512, 1024)] == [0.001, 0.0015, 0.002, 0.003]
    cfg = preset("v2-1gpu")
    assert cfg.ema_beta_at(16) == pytest.approx(0.5 ** (16 / 10_000))


# --- fault 3: a run can be rescued on resume ----------------------------------------------------------------------

def test_resume_accepts_future_batches_notes_the_current_one_and_refuses_the_past():
    saved = preset("paper", 1024)
    at_512 = round(kimg_to_reach(512, saved.schedule) * 1000) + 16   # stabilising 512x512
    new = preset("paper", 1024)
    new.schedule.batch = {4: 16, 256: 14, 512: 4, 1024: 2}
    new.checkpoint_kimg = 50
    accepted, notes = resume_changes(saved, new, at_512)
    assert "batch at 512x512: 6 -> 4" in accepted and "batch at 1024x1024: 3 -> 2" in accepted
    assert "checkpoint_kimg: 200 -> 50" in accepted
    assert len(notes) == 1 and "512x512" in notes[0]

    past = preset("paper", 1024)
    past.schedule.batch = {4: 8, 256: 14, 512: 6, 1024: 3}
    with pytest.raises(ConfigError, match=r"batch at 4x4: 16 -> 8 \(already trained.*What may change"):
        resume_changes(saved, past, at_512)
    wider = preset("paper", 1024)
    wider.model.fmap_max = 256
    with pytest.raises(ConfigError, match="model.fmap_max: 512 -> 256"):
        resume_changes(saved, wider, at_512)


def test_forget_after_drops_log_lines_past_the_checkpoint(tmp_path):
    lines = [{"kimg": k / 10} for k in range(1, 8)]
    (tmp_path / "stats.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines) + '{"kimg": 0.8, "lo')
    (tmp_path / "metrics.jsonl").write_text(json.dumps({"snapshot_kimg": 0.2}) + "\n"
                                            + json.dumps({"snapshot_kimg": 0.6}) + "\n")
    forget_after(tmp_path, 0.4)
    kept = [json.loads(x)["kimg"] for x in (tmp_path / "stats.jsonl").read_text().splitlines()]
    assert kept == [0.1, 0.2, 0.3, 0.4]
    assert [json.loads(x)["snapshot_kimg"] for x in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [0.2]


# --- fault 5: a metric never ends a run ----------------------------------------------------------------------------

def test_a_failing_metric_is_logged_and_the_run_goes_on(tiny_dataset, tmp_path, monkeypatch, capsys):
    import progan.metrics
    from progan.train.loop import train

    def broken(*args, **kwargs):
        raise MemoryError("out of memory in the metric")

    monkeypatch.setattr(progan.metrics, "evaluate", broken)
    cfg = preset("tiny", 16)
    cfg.data, cfg.metrics, cfg.metrics_kimg, cfg.metrics_images = tiny_dataset, ["swd"], 0.256, 16
    state = train(cfg, tmp_path / "run", progress=False)
    assert state.progress.cur_nimg == round(cfg.schedule.total_kimg * 1000)
    err = capsys.readouterr().err
    assert "metrics swd failed and were skipped: MemoryError: out of memory in the metric" in err
    assert (tmp_path / "run" / "model" / "generator.safetensors").is_file()


# --- GPU paths without a GPU: --bf16 runs the training loop's own autocast on the CPU ------------------------------

def test_bf16_training_steps_through_the_loop_stay_close_to_float32(tiny_dataset, tmp_path, monkeypatch):
    from progan.train import loop

    dtypes = []
    real_loss = loop.generator_loss

    def recording(D, fake, *args, **kwargs):
        dtypes.append(fake.dtype)
        return real_loss(D, fake, *args, **kwargs)

    monkeypatch.setattr(loop, "generator_loss", recording)
    runs = {}
    for bf16 in (False, True):
        cfg = preset("tiny", 8)
        cfg.data, cfg.precision, cfg.schedule.total_kimg = tiny_dataset, "bf16" if bf16 else "fp32", 0.064
        runs[bf16] = loop.train(cfg, tmp_path / str(bf16), progress=False)
    assert torch.float32 in dtypes and torch.bfloat16 in dtypes        # G's output under autocast is bf16
    a, b = runs[False].G.to_rgb[0].weight, runs[True].G.to_rgb[0].weight
    assert b.dtype == torch.float32 and torch.isfinite(b).all()       # weights and Adam stay float32
    assert not torch.equal(a, b) and (a - b).abs().max() < 0.05 * a.abs().max()
