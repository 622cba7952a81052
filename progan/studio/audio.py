"""Music for the offline show: a song's loudness and onsets, read with librosa, turned into the controls the page
sends live ("drive" and "hit", steering.Steering) at each frame of a video (`progan generate RUN --audio song.wav`).

Live, the page (static/studio.js) measures the same two things with the Web Audio API while the song plays: the
loudness as the RMS of the latest samples, the onsets as peaks of the spectral flux. Both sides normalise the
loudness alike, by a running peak that decays with a time constant of PEAK_SECONDS: a quiet song drives the show as
much as a loud one, and a quiet passage after a loud one still moves it.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from progan.studio.protocol import HIT_ACTIONS

PEAK_SECONDS = 10.0     # the running peak's memory
PEAK_FLOOR = 1e-3       # RMS below this counts as silence (so near-silence is not normalised up to full energy)
SAMPLE_RATE = 22050
HOP = 512               # about 23 ms between analysis frames


class AudioError(ValueError):
    """A song that cannot be used; the message names the file."""


@dataclass(frozen=True)
class Reactions:
    """What the music does to the show (the page's Music box; `progan generate --audio-motion, --on-hit,
    --hit-strength`): how strongly the motion's speed follows the loudness, and what an onset does, how strongly."""

    motion: float = 0.5
    hit: str = "pulse"          # one of HIT_ACTIONS, or "none"
    strength: float = 0.6

    def check(self) -> "Reactions":
        if not (math.isfinite(self.motion) and 0 <= self.motion <= 1):
            raise AudioError(f"--audio-motion {self.motion:g}: must be in [0, 1]")
        if self.hit not in (*HIT_ACTIONS, "none"):
            raise AudioError(f"--on-hit {self.hit!r}: one of {', '.join(HIT_ACTIONS)}, none")
        if not (math.isfinite(self.strength) and 0 <= self.strength <= 1):
            raise AudioError(f"--hit-strength {self.strength:g}: must be in [0, 1]")
        return self

    def as_json(self) -> dict:
        return {"motion": self.motion, "hit": self.hit, "strength": self.strength}


@dataclass(frozen=True)
class Song:
    path: Path
    seconds: float
    times: np.ndarray       # analysis frame times (s)
    rms: np.ndarray         # RMS loudness at those times
    onsets: np.ndarray      # onset times (s)

    def energy(self, fps: int, frames: int) -> np.ndarray:
        """Loudness in [0, 1] at each video frame k (time k / fps): the RMS there over its running peak."""
        level = np.interp(np.arange(frames) / fps, self.times, self.rms, right=0.0)
        decay = math.exp(-1.0 / (fps * PEAK_SECONDS))
        out, peak = np.zeros(frames), PEAK_FLOOR
        for k, x in enumerate(level):
            peak = max(x, peak * decay, PEAK_FLOOR)
            out[k] = x / peak if x >= PEAK_FLOOR else 0.0
        return out

    def hit_frames(self, fps: int) -> set[int]:
        """The frames that come first after an onset (several onsets within a frame are one hit)."""
        return {math.ceil(t * fps - 1e-9) for t in self.onsets}


def read_song(path: str | Path) -> Song:
    """Loudness (librosa.feature.rms) and onsets (librosa.onset.onset_detect on the onset strength) of a song, or
    AudioError naming the file (missing, unreadable, silent) or the missing package."""
    path = Path(path)
    try:
        import librosa
    except ImportError:
        raise AudioError("--audio needs librosa: pip install 'progan[audio]'") from None
    if not path.is_file():
        raise AudioError(f"--audio {path}: no such file")
    try:
        with warnings.catch_warnings():  # librosa warns as it falls back from soundfile to audioread
            warnings.simplefilter("ignore")
            y, sr = librosa.load(path, sr=SAMPLE_RATE, mono=True)
    except Exception as e:  # soundfile, audioread and ffmpeg each fail in their own way
        detail = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
        raise AudioError(f"--audio {path}: cannot read it as audio ({detail})") from None
    if y.size < HOP:
        raise AudioError(f"--audio {path}: it holds no sound ({y.size} samples)")
    rms = librosa.feature.rms(y=y, frame_length=2 * HOP, hop_length=HOP)[0]
    times = librosa.times_like(rms, sr=sr, hop_length=HOP)
    strength = librosa.onset.onset_strength(y=y, sr=sr, hop_length=HOP)
    onsets = librosa.onset.onset_detect(onset_envelope=strength, sr=sr, hop_length=HOP, units="time")
    return Song(path, y.size / sr, times, rms, np.asarray(onsets, dtype=np.float64))


def song_controls(song: Song, reactions: Reactions, fps: int, frames: int) -> Callable[[int], list[dict]]:
    """controls(k): the controls the page would send before frame k while the song plays (show.show_frames)."""
    energy = song.energy(fps, frames)
    hits = song.hit_frames(fps) if reactions.hit != "none" else set()

    def controls(k: int) -> list[dict]:
        out = [{"type": "drive", "energy": float(energy[k]), "motion": reactions.motion}]
        if k in hits:
            out.append({"type": "hit", "action": reactions.hit, "strength": reactions.strength})
        return out
    return controls
