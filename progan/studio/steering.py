"""One viewer's steering state: what it is shown and how that moves on (speed, truncation, sliders, likes, grid,
seed jumps, shuffles, the music's drive and hits) and, for a conditional model, its condition and the queue of
prompts to come.

The controls of protocol.controls() act on a `Steering` through its methods, on the render thread, which then asks
it for each frame's latents; the offline show (show.py) drives one the same way on a video's clock. A conditional
stream shows one condition row (a class blend, a prompt's reading, or a caption of the data until the first prompt),
which moves to a new one gradually (motion.ConditionMorph) while the latent walk goes on; a text stream also keeps a
small queue of prompts, each played for `prompt_seconds` before the next.

A setlist (setlist.py) is that queue, loaded whole: its entries carry their own seconds and go back to the end of
the queue once they have played, so it loops. A seed entry has no condition row: the latents glide to the seed's
sample (motion.LatentMorph) and the motion goes on from there, as the seed box starts it.

Music (static/studio.js live, audio.py offline) acts through two controls: "drive" (the loudness, which scales the
motion's speed) and "hit" (an onset: a pulse of the latents, a jump ahead, a pulse of a field's coupling, or the
next entry of the queue).
"""

from __future__ import annotations

import collections
import functools
import math
from dataclasses import replace
from typing import NamedTuple

import torch

from progan.conditioning.rows import seed_draws
from progan.generate import condition_noise_from_seeds, latents_from_seeds, normalize
from progan.seeds import generator
from progan.studio.motion import ConditionMorph, Impulses, LatentMorph, LatentWalk
from progan.studio.patterns import Anchors, Pattern, frame_latents, settings
from progan.studio.protocol import MAX_QUEUE, ControlError
from progan.studio.renderer import FrameRenderer
from progan.studio.targets import Target
from progan.studio.taste import Preferences, TasteError

MORPH_SECONDS = 0.5            # how long the stream takes to turn to a new prompt or class
ENTRY_MORPH_SECONDS = 2.0      # a setlist entry's morph (at most half the entry): slower, as a show's transitions
PROMPT_SECONDS_DEFAULT = 8.0   # how long a queued prompt (or, before the first prompt, a caption) plays
# What a hit does at strength 1: a pulse pushes every lane PULSE_SIZE x sqrt(L) along a direction of its own (about
# 40 degrees) and dies away in PULSE_SECONDS; a jump moves JUMP_KEYFRAMES along a walk or field (a loop a quarter
# turn); a coupling pulse loosens a field to coupling 0 and back in COUPLING_PULSE_SECONDS.
PULSE_SIZE = 0.8
PULSE_SECONDS = 0.25
JUMP_KEYFRAMES = 1.0
JUMP_TURNS = 0.25
COUPLING_PULSE_SECONDS = 0.5


class Takes(NamedTuple):
    """Each lane's own take on a condition: its row [lanes, cond_size] and noise [lanes, noise_size] (or None)."""

    rows: torch.Tensor
    noise: torch.Tensor | None


class FrameInputs(NamedTuple):
    """What the renderer takes for one frame of one viewer (FrameRenderer.render's arguments), one row per lane."""

    z: torch.Tensor                    # [lanes, L], steering applied
    psi: torch.Tensor                  # [lanes] truncation
    cond: torch.Tensor | None          # [lanes, cond_size] condition rows (conditional models)
    mean: torch.Tensor | None          # [lanes, C, 4, 4] truncation centres (None: the renderer's)
    noise: torch.Tensor | None         # [lanes, noise_size] conditioning-augmentation noise (text models)


class Steering:
    """What one viewer is shown and how it moves on: its walk, sliders, preferences, truncation, grid and, for a
    conditional model, its condition (with its morph and, for prompts, the queue). Owned by the render thread; the
    controls of protocol.controls() act on it through the methods below."""

    HISTORY = 8  # recent frames whose latents a like/dislike may refer to

    def __init__(self, renderer: FrameRenderer, seed: int, pattern: Pattern = Pattern(),
                 prefs: Preferences | None = None):
        self.renderer = renderer
        self.rng = torch.Generator().manual_seed(seed)
        self.prefs = prefs if prefs is not None else Preferences(renderer.pref_basis)
        self.walk = LatentWalk(functools.partial(self.prefs.sample, rng=self.rng))  # no cycle back to self
        self.sliders = torch.zeros(renderer.sliders)
        self.speed, self.psi, self.frozen = 0.25, 1.0, False
        self.grid = 1
        # A field or loop is a function of (show_seed, phase): the phase moves on with the clock, the seed control
        # starts the show of that seed from its beginning (as `progan generate --pattern --seed` renders it).
        self.pattern = pattern
        self.phase = 0.0
        self.show_seed = seed
        self.anchors = Anchors(renderer.latent_size)
        self.messages: collections.deque = collections.deque(maxlen=8)  # for the page, sent after the next pass
        self.seed: int | None = None          # set while the frame is exactly a jumped-to seed
        self.want_png = False                 # the viewer asked for this frame as a PNG too
        self.history: collections.deque = collections.deque(maxlen=self.HISTORY)  # (frame seq, walk latents)
        self.last_time: float | None = None   # the latest frame's time (the render pass's clock)
        self.max_step = 0.5                   # seconds the motion moves on at most between frames (a stall does not
                                              # make it jump; the offline show, which has no stalls, lifts it)
        # Music: the loudness in [0, 1] and how strongly the motion's speed follows it; hits and what they left.
        self.energy, self.motion = 0.0, 0.0
        self.hits = 0
        self.pulses = Impulses(PULSE_SECONDS)            # payload: the directions [lanes, L] of each pulse
        self.loosen = Impulses(COUPLING_PULSE_SECONDS)   # a field's coupling pulses
        self.shift = LatentMorph(ENTRY_MORPH_SECONDS)    # the glide to a seed entry's sample
        # The condition (conditional models only).
        self.target = renderer.targets.first_target(self.rng)
        self.morph = None if self.target is None else ConditionMorph(self.target.row, MORPH_SECONDS)
        self.morph_progress: float | None = None if self.target is None else 1.0
        self.means: dict[str, torch.Tensor | None] = {"start": None, "end": None, "shown": None}
        self.queue: collections.deque[Target] = collections.deque()
        self.prompt_seconds = PROMPT_SECONDS_DEFAULT
        self.started: float | None = None     # when the target began to play (None: at the next frame)
        self.encore = False                   # the prompt plays again, having played its time once
        # Each lane's own take on what plays: its condition row (for a prompt read as "draw", its own caption of
        # the reading) and, for a text model, its conditioning-augmentation noise, as training samples both. Drawn
        # afresh for every new condition and moved to along with the row, so that a new prompt brings new takes.
        self.takes_rng = generator(seed, "studio-takes")
        self.takes: dict[str, Takes | None] = {"start": None, "end": None, "shown": None}
        self.condition_target = self.target  # the latest target with a row (a seed entry has none)
        self.changed = self.target is not None  # the page has not been told what plays now

    # -- the controls -------------------------------------------------------------------------------------------
    def set_speed(self, value: float) -> None:
        self.speed = value

    def set_truncation(self, value: float) -> None:
        self.psi = value

    def set_frozen(self, value: bool) -> None:
        self.frozen = value

    def blend_classes(self, weights: dict[int, float], received: float | None = None) -> None:
        self.play(self.renderer.targets.class_target(weights), received)

    def prompt(self, text: str, reading, queue: bool = False, received: float | None = None) -> None:
        """Morph to a prompt now, or (queue) after what plays now; `reading` is its
        progan.conditioning.prompts.PromptReading. A queued prompt plays once, setlist or not."""
        target = self.renderer.targets.prompt_target(text, reading)
        if queue and self.target is not None and self.target.source != "data":
            if sum(t.seconds is None for t in self.queue) >= MAX_QUEUE:
                raise ControlError(f"the queue is full ({MAX_QUEUE} prompts); {text!r} was not queued")
            self.queue.append(target)
            self.changed = True
        else:
            self.play(target, received)

    def clear_queue(self) -> None:
        """Empty the queue (a setlist too): what plays now goes on."""
        self.queue.clear()
        if self.target is not None and self.target.seconds is not None:
            self.target = replace(self.target, seconds=None)  # no longer an entry to come back to
        self.changed = True

    def load_setlist(self, entries: list[Target], received: float | None = None) -> None:
        """Play a setlist (setlist.resolve's Targets) from its first entry, in place of the queue."""
        self.queue = collections.deque(entries[1:])
        self.play(entries[0], received)

    def next_entry(self, received: float | None = None) -> None:
        """The next in the queue now; what played goes back to the end if it is a setlist entry."""
        if self.target is not None and self.target.seconds is not None:
            self.queue.append(self.target)
        if self.queue:
            self.play(self.queue.popleft(), received)

    def drive(self, energy: float, motion: float) -> None:
        """The music's loudness in [0, 1], and how strongly the motion's speed follows it (0: not at all; 1: still
        in silence, twice the speed at the loudest)."""
        self.energy, self.motion = energy, motion

    def hit(self, action: str, strength: float, received: float | None = None) -> None:
        """An onset of the music: "pulse", "jump", "coupling" or "next", at `strength` in [0, 1]."""
        at = received if received is not None else (self.last_time if self.last_time is not None else 0.0)
        self.hits += 1
        if action == "pulse":
            lanes, size = self.grid * self.grid, self.renderer.latent_size
            d = torch.randn(lanes, size, generator=generator(self.show_seed, "pulse", self.hits))
            self.pulses.add(at, strength, d / d.norm(dim=1, keepdim=True) * (PULSE_SIZE * math.sqrt(size)))
        elif action == "jump":
            if self.pattern.motion == "walk":
                self.walk.advance(strength * JUMP_KEYFRAMES)
            elif self.pattern.motion == "loop":
                self.phase = (self.phase + strength * JUMP_TURNS) % 1.0
            else:
                self.phase += strength * JUMP_KEYFRAMES
        elif action == "coupling":
            self.loosen.add(at, strength)
        elif action == "next":
            self.next_entry(at)
        self.seed = None

    def set_prompt_seconds(self, value: float) -> None:
        self.prompt_seconds = value
        self.changed = True

    def set_pattern(self, motion: str | None = None, coupling: float | None = None,
                    period: float | None = None) -> None:
        """A new motion (its phase starts again) or new settings (the show goes on from where it is)."""
        pattern = settings(self.pattern, coupling=coupling, period=period)
        if motion is not None and motion != pattern.motion:
            pattern = Pattern(motion, pattern.layout, pattern.coupling, pattern.period)
            self.phase = 0.0
        self.pattern = pattern
        self.seed = None

    def load_taste(self, profile: dict) -> None:
        """Take a saved taste (taste.Preferences.load_profile; TasteError when it does not fit this model)."""
        try:
            self.prefs.load_profile(profile, self.renderer.taste_model)
        except TasteError as e:
            raise ControlError(str(e)) from None
        self.walk.retarget()
        self.seed = None

    def save_taste(self) -> None:
        """Send the page this viewer's taste as a profile to save (the "taste" message)."""
        self.messages.append({"type": "taste", "profile": self.prefs.profile(self.renderer.taste_model)})

    def jump_to_seed(self, seed: int) -> None:
        if self.pattern.motion != "walk":
            self.show_seed, self.phase = seed, 0.0
            self.seed = seed
            return
        seeds = [seed + i for i in range(self.walk.lanes)]
        self.walk.jump(latents_from_seeds(seeds, self.renderer.latent_size))
        if self.morph is not None:  # the seeds' own takes: the frame is `progan generate --seeds`'s
            self.takes = {"start": None, "end": self.seed_takes(seeds), "shown": None}
        self.seed = seed

    def set_slider(self, index: int, value: float) -> None:
        self.sliders[index] = value

    def reset_sliders(self) -> None:
        self.sliders.zero_()

    def like(self, frame: int | None, cell: int) -> None:
        self.prefs.like(self.latent_of(frame, cell))
        self.walk.retarget()
        self.seed = None

    def dislike(self, frame: int | None, cell: int) -> None:
        self.prefs.dislike(self.latent_of(frame, cell))
        self.walk.retarget()
        self.seed = None

    def reset_preferences(self) -> None:
        self.prefs.reset()
        self.walk.retarget()

    def set_grid(self, value: int) -> None:
        self.grid = value
        self.walk.set_lanes(value * value)
        self.seed = None

    def shuffle(self) -> None:
        if self.pattern.motion != "walk":
            self.show_seed = int(torch.randint(2**31, (1,), generator=self.rng))
        else:
            self.walk.shuffle()
        self.seed = None

    def save_png(self) -> None:
        self.want_png = True

    # -- the condition ------------------------------------------------------------------------------------------
    def play(self, target: Target, at: float | None = None) -> None:
        """Turn toward `target`, the move timed from `at` (when it was asked for; default: the latest frame, so the
        next frame is already part of the way; before any frame: there at once). A condition row morphs; a seed's
        sample is glided to, the motion starting again from it."""
        self.encore = False
        if at is None:
            at = self.last_time if self.last_time is not None else -math.inf
        seconds = MORPH_SECONDS if target.seconds is None else min(ENTRY_MORPH_SECONDS, target.seconds / 2)
        self.target = target
        if target.row is not None and self.morph is not None:
            self.morph.seconds = seconds
            self.morph.to(target.row, at)
            self.means = {"start": self.means["shown"], "end": None, "shown": None}
            self.takes = {"start": self.takes["shown"], "end": None, "shown": None}
            self.condition_target = target
        if target.seed is not None:
            shown = self.history[-1][1] if self.history else None
            if self.pattern.motion == "walk":
                lanes = self.walk.lanes
                self.walk.jump(latents_from_seeds([target.seed + i for i in range(lanes)], self.renderer.latent_size))
            else:
                self.show_seed, self.phase = target.seed, 0.0
            if shown is not None and math.isfinite(at):
                self.shift.seconds = seconds
                self.shift.to(shown, at)
            self.seed = None
        self.started = at if math.isfinite(at) else None
        self.changed = True

    def advance_queue(self, now: float) -> None:
        """When what plays has played its time (a setlist entry's own, else prompt_seconds) the next in the queue
        plays; before the first prompt, another caption of the data; with nothing queued, the same prompt again
        with fresh takes (every lane draws anew). A frozen stream holds what it shows."""
        if self.started is None:
            self.started = now
        seconds = self.target.seconds if self.target.seconds is not None else self.prompt_seconds
        played = now - self.started >= seconds or (self.encore and bool(self.queue))  # an encore has had its time
        if self.frozen or not played:
            return
        if self.queue or self.target.seconds is not None:
            self.next_entry(now)
        elif self.target.source == "data" and self.renderer.targets.captions:
            self.play(self.renderer.targets.caption_target(self.rng), now)
        elif self.target.source == "prompt":  # fresh takes on the same prompt: each lane draws again
            self.play(self.target, now)
            self.encore = True

    def condition_state(self) -> dict:
        """The "condition" message: what plays now and what comes next."""
        return {"type": "condition", "now": self.target.as_json(), "next": [t.as_json() for t in self.queue],
                "seconds": self.prompt_seconds}

    def condition_mean(self, progress: float) -> torch.Tensor:
        """The truncation centre along the morph: between the two ends' means (each computed once, when needed)."""
        m = self.means
        if m["end"] is None:
            m["end"] = self.renderer.condition_mean(self.morph.end)
        if progress >= 1.0:
            m["shown"] = m["end"]
        else:
            if m["start"] is None:
                m["start"] = self.renderer.condition_mean(self.morph.start)
            m["shown"] = torch.lerp(m["start"], m["end"], progress)
        return m["shown"]

    def draws(self) -> bool:
        return self.renderer.reading == "draw" and self.condition_target.parts is not None

    def new_takes(self, lanes: int) -> Takes:
        """Fresh takes on the condition for `lanes` lanes, from the stream's own generator."""
        if self.draws():
            vectors, weights = self.condition_target.parts
            rows = vectors[torch.multinomial(weights, lanes, replacement=True, generator=self.takes_rng)]
        else:
            rows = self.morph.end.view(1, -1).expand(lanes, -1)
        size = self.renderer.noise_size
        return Takes(rows, torch.randn(lanes, size, generator=self.takes_rng) if size else None)

    def seed_takes(self, seeds: list[int]) -> Takes:
        """The takes of these seeds, as `progan generate --seeds` draws them."""
        if self.draws():
            vectors, weights = self.condition_target.parts
            rows = vectors[seed_draws(weights, seeds)]
        else:
            rows = self.morph.end.view(1, -1).expand(len(seeds), -1)
        size = self.renderer.noise_size
        return Takes(rows, condition_noise_from_seeds(seeds, size) if size else None)

    def lane_takes(self, lanes: int, progress: float) -> Takes:
        """The takes shown along the morph: rows linear from those shown when it began to the new target's (as the
        morph's own row), the noise likewise but rescaled to unit variance (two independent draws' plain average
        would narrow the takes mid-morph). Drawn again when the number of lanes changes."""
        t = self.takes
        if t["end"] is None or t["end"].rows.shape[0] != lanes:
            t["end"] = self.new_takes(lanes)
        start, end = t["start"], t["end"]
        if progress >= 1.0 or start is None or start.rows.shape != end.rows.shape:
            t["shown"] = end
        else:
            a, b = 1.0 - progress, progress
            noise = None if end.noise is None else (a * start.noise + b * end.noise) / math.sqrt(a * a + b * b)
            t["shown"] = Takes(torch.lerp(start.rows, end.rows, progress), noise)
        return t["shown"]

    # -- the render thread --------------------------------------------------------------------------------------
    def latent_of(self, frame: int | None, cell: int) -> torch.Tensor:
        """The walk latent shown in cell `cell` of frame `frame` (or of the latest frame if it is gone)."""
        for seq, z in reversed(self.history):
            if frame is None or seq == frame:
                return z[min(cell, z.shape[0] - 1)]
        return self.walk.position()[min(cell, self.walk.lanes - 1)]

    def rate(self) -> float:
        """Phase units a second now: the pattern's rate at this speed, scaled by the music's drive."""
        return self.pattern.rate(self.speed) * (1.0 - self.motion + 2.0 * self.motion * self.energy)

    def step(self, now: float) -> bool:
        """Advance the walk by the time since the last frame (capped at max_step), and the queue; True if the frame
        changes (the walk moved, the condition or the latents are on their way, a hit is still felt)."""
        dt = 0.0 if self.last_time is None else min(now - self.last_time, self.max_step)
        self.last_time = now
        if self.target is not None:
            self.advance_queue(now)
        morphing = (self.morph is not None and self.morph.active) or self.shift.active or bool(self.pulses) or bool(
            self.loosen)
        rate = self.rate()
        if self.frozen or rate <= 0 or dt <= 0:
            return morphing
        if self.pattern.motion == "walk":
            self.walk.advance(rate * dt)
        else:
            self.phase += rate * dt
            if self.pattern.motion == "loop":
                self.phase %= 1.0  # turns: only the angle matters, and a small number keeps its precision
        self.seed = None
        return True

    def latents(self, seq: int) -> FrameInputs:
        """The renderer's inputs for frame `seq`, whose walk latents it records for likes."""
        offset = self.renderer.slider_offset(self.sliders)
        now = self.last_time if self.last_time is not None else 0.0
        loosen = sum(w for w, _ in self.loosen.live(now))
        if self.pattern.motion == "walk":
            z = self.walk.position()
            steered = normalize(z) + offset
        else:
            pattern = self.pattern
            if loosen > 0 and pattern.motion == "field":
                pattern = replace(pattern, coupling=pattern.coupling * max(0.0, 1.0 - loosen))
            steered = frame_latents(pattern, self.show_seed, self.phase, self.grid, self.anchors, self.prefs, offset)
            z = steered - offset
        reacted = self.react(z, now)
        if reacted is not None:
            z = reacted
            steered = z + offset
        self.history.append((seq, z))
        lanes = z.shape[0]
        cond = mean = noise = None
        if self.morph is not None:
            _, self.morph_progress = self.morph.at(self.last_time if self.last_time is not None else 0.0)
            cond, noise = self.lane_takes(lanes, self.morph_progress)
            if self.psi < 1:
                mean = self.condition_mean(self.morph_progress).expand(lanes, -1, -1, -1)
            else:
                self.means["shown"] = None
        return FrameInputs(steered, torch.full((lanes,), self.psi), cond, mean, noise)

    def react(self, z: torch.Tensor, now: float) -> torch.Tensor | None:
        """z [lanes, L] with the pulses still felt and the glide to a seed entry applied, at norm sqrt(L); None when
        neither is under way (z is shown as it is)."""
        pulses = [(w, d) for w, d in self.pulses.live(now) if d.shape == z.shape]
        if not pulses and not self.shift.active:
            return None
        out = z
        for w, d in pulses:
            out = out + w * d
        if self.shift.active:
            out = self.shift.at(out, now)
        return normalize(out)
