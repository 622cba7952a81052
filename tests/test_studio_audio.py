"""Music: what a hit and the loudness do to a stream (steering.Steering), a song's loudness and onsets read with
librosa (audio.py), and `progan generate --audio song.wav --video show.mp4`: the reactions rendered from the file,
the song muxed in, an unreadable file named."""

import math
import subprocess

import imageio_ffmpeg
import numpy as np
import pytest
import torch

from progan.cli import main as progan
from progan.model_io import load_generator
from progan.studio.audio import AudioError, Reactions, read_song, song_controls
from progan.studio.patterns import Pattern
from progan.studio.renderer import FrameRenderer
from progan.studio.steering import PULSE_SECONDS, Steering
from progan.studio.show import ShowSettings, show_frames
from tests.studio_helpers import export_random_generator, write_clicks

pytestmark = pytest.mark.usefixtures("one_torch_thread")

L = 32


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return export_random_generator(tmp_path_factory.mktemp("audio"), resolution=16, latent_size=L, fmap_base=256, fmap_max=32)


@pytest.fixture(scope="module")
def renderer(model_dir):
    return FrameRenderer(load_generator(model_dir), mean_samples=64)


@pytest.fixture(scope="module")
def clicks(tmp_path_factory):
    return write_clicks(tmp_path_factory.mktemp("song") / "clicks.wav")


# -- what the music does ------------------------------------------------------------------------------------------

def latents(st, t):
    st.step(t)
    return st.latents(0)[0]


def test_the_loudness_sets_the_motions_speed(renderer):
    st = Steering(renderer, 0, Pattern("field"))
    st.set_speed(0.5)
    assert st.rate() == 0.5
    st.drive(energy=0.0, motion=1.0)
    assert st.rate() == 0.0  # still in silence
    st.drive(energy=1.0, motion=1.0)
    assert st.rate() == 1.0  # twice the speed at the loudest
    st.drive(energy=0.25, motion=0.5)
    assert st.rate() == pytest.approx(0.5 * (0.5 + 0.25))
    st.step(0.0)
    st.step(0.4)
    assert st.phase == pytest.approx(0.4 * 0.375)


def test_a_pulse_jolts_the_latents_and_dies_away(renderer):
    st = Steering(renderer, 0)
    st.set_speed(0.0)
    still = latents(st, 0.0)
    st.hit("pulse", 1.0, received=0.1)
    jolted = latents(st, 0.1)
    moved = (jolted - still).norm().item()
    assert moved == pytest.approx(2 * math.sin(math.atan(0.8) / 2) * math.sqrt(L), rel=0.25)  # about 39 degrees
    later = (latents(st, 0.1 + PULSE_SECONDS) - still).norm().item()
    assert later < 0.5 * moved
    assert torch.equal(latents(st, 3.0), still)  # gone: the walk as it was, exactly
    assert not st.pulses and st.hits == 1
    weak = Steering(renderer, 0)
    weak.set_speed(0.0)
    weak.step(0.0)
    weak.hit("pulse", 0.2, received=0.0)
    assert (latents(weak, 0.0) - still).norm().item() < 0.35 * moved


def test_a_jump_and_a_coupling_pulse(renderer):
    walk = Steering(renderer, 0)
    walk.step(0.0)
    walk.hit("jump", 0.5)
    assert walk.walk.t == pytest.approx(0.5)  # half a keyframe ahead
    loop = Steering(renderer, 0, Pattern("loop"))
    loop.hit("jump", 1.0)
    assert loop.phase == pytest.approx(0.25)  # a quarter turn
    field = Steering(renderer, 0, Pattern("field", coupling=0.9))
    field.set_grid(4)
    field.set_speed(0.0)

    def neighbours(z):
        z = z.view(4, 4, -1)
        return torch.nn.functional.cosine_similarity(z[:, :-1], z[:, 1:], dim=-1).mean().item()

    together = neighbours(latents(field, 0.0))
    field.hit("coupling", 1.0, received=0.0)
    apart = neighbours(latents(field, 0.0))
    assert apart < together - 0.3  # the wall breaks apart on the hit...
    assert neighbours(latents(field, 4.0)) == pytest.approx(together)  # ...and comes back together


# -- a song offline -----------------------------------------------------------------------------------------------

def test_a_songs_loudness_and_onsets(clicks, tmp_path):
    song = read_song(clicks)
    assert song.seconds == pytest.approx(3.0, abs=0.01)
    clicks_at = np.arange(0.25, 2.95, 0.5)
    found = [t for t in song.onsets if np.abs(clicks_at - t).min() < 0.05]
    assert len(found) >= len(clicks_at) - 1
    assert all(t in found or t < 0.1 for t in song.onsets)  # the clicks (and perhaps the noise floor's start)
    energy = song.energy(fps=20, frames=60)
    on = [math.ceil(t * 20) for t in clicks_at]
    assert energy.max() <= 1.0 and min(energy[k] for k in on) > 0.5
    assert np.median(energy) < 0.2  # the quiet floor between clicks
    controls = song_controls(song, Reactions(motion=0.7, hit="jump", strength=0.3), fps=20, frames=60)
    assert controls(10) == [{"type": "drive", "energy": energy[10], "motion": 0.7}]
    hit = song.hit_frames(20)
    k = min(hit)
    assert controls(k)[1] == {"type": "hit", "action": "jump", "strength": 0.3}
    assert all(len(controls(k)) == 1 for k in range(60) if k not in hit)

    with pytest.raises(AudioError, match="--audio .*nothing.wav: no such file"):
        read_song(tmp_path / "nothing.wav")
    (tmp_path / "noise.wav").write_bytes(b"RIFF\0\0\0\0WAVEfmt not a song at all" * 30)
    with pytest.raises(AudioError, match="--audio .*noise.wav: cannot read it as audio"):
        read_song(tmp_path / "noise.wav")
    with pytest.raises(AudioError, match="--on-hit 'dance': one of pulse, jump, coupling, next, none"):
        Reactions(hit="dance").check()


def test_generate_audio_renders_the_reactions_with_the_song(model_dir, renderer, clicks, tmp_path, capsys):
    video = tmp_path / "show.mp4"
    assert progan(["generate", str(model_dir), "--audio", str(clicks), "--fps", "20", "--size", "32x32",
                   "--hit-strength", "1", "--video", str(video), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "walk, seed 0, 1x1 cells, moving with clicks.wav (" in out and ": 60 frames at 20 frames/s" in out
    probe = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-i", str(video)], capture_output=True,
                           text=True).stderr
    assert "Video: h264" in probe and "Audio: aac" in probe, probe  # the song is in the video

    # frames right after an onset move more than the frames between them (a pulse at each click)
    song = read_song(clicks)
    settings = ShowSettings(seed=0, seconds=song.seconds, fps=20, size=(32, 32))
    frames = [f.astype(float) for f in show_frames(renderer, settings, controls=song_controls(
        song, Reactions(strength=1.0), settings.fps, settings.frames))]
    steps = np.array([np.abs(b - a).mean() for a, b in zip(frames, frames[1:])])  # steps[k - 1]: into frame k
    hit = sorted(song.hit_frames(20))
    after = steps[[k - 1 for k in hit]]
    between = np.delete(steps, [k + d for k in hit for d in (-1, 0, 1, 2, 3) if 0 <= k + d < len(steps)])
    assert after.mean() > 3 * between.mean(), (after.mean(), between.mean())
    reader = imageio_ffmpeg.read_frames(str(video))
    next(reader)
    got = [np.frombuffer(f, np.uint8).reshape(32, 32, 3).astype(float) for f in reader]
    assert len(got) == 60
    moved = np.array([np.abs(b - a).mean() for a, b in zip(got, got[1:])])
    assert moved[[k - 1 for k in hit]].mean() > 2 * np.delete(moved, [k - 1 for k in hit]).mean()  # in the MP4 too

    garbage = tmp_path / "song.mp3"
    garbage.write_bytes(b"ID3 but nothing else" * 50)
    assert progan(["generate", str(model_dir), "--audio", str(garbage), "--video", str(video)]) == 2
    err = capsys.readouterr().err
    assert f"--audio {garbage}: cannot read it as audio" in err
    assert progan(["generate", str(model_dir), "--audio", str(clicks), "--on-hit", "dance", "--video",
                   str(video)]) == 2
    assert "--on-hit 'dance'" in capsys.readouterr().err
    assert progan(["generate", str(model_dir), "--audio", str(clicks), "--video", str(tmp_path / "x.gif"),
                   "--device", "cpu"]) == 2
    assert "a GIF has no sound" in capsys.readouterr().err
