"""One viewer's steering state: what it is shown and how that moves on (speed, truncation, sliders, likes, grid,
seed jumps, shuffles) and, for a conditional model, its condition and the queue of prompts to come.

The controls of protocol.controls() act on a `Steering` through its methods, on the render thread, which then asks
it for each frame's latents. A conditional stream shows one condition row (a class blend, a prompt's reading, or a
caption of the data until the first prompt), which moves to a new one gradually (motion.ConditionMorph) while the
latent walk goes on; a text stream also keeps a small queue of prompts, each played for `prompt_seconds` before the
next.
"""

from __future__ import annotations

import collections
import functools
import math

import torch

from progan.generate import latents_from_seeds, normalize
from progan.studio.motion import ConditionMorph, LatentWalk
from progan.studio.patterns import Anchors, Pattern, frame_latents, settings
from progan.studio.protocol import MAX_QUEUE, ControlError
from progan.studio.renderer import FrameRenderer
from progan.studio.targets import Target
from progan.studio.taste import Preferences, TasteError

MORPH_SECONDS = 0.5            # how long the stream takes to turn to a new prompt or class
PROMPT_SECONDS_DEFAULT = 8.0   # how long a queued prompt (or, before the first prompt, a caption) plays


class Steering:
    """What one viewer is shown and how it moves on: its walk, sliders, preferences, truncation, grid and, for a
    conditional model, its condition (with its morph and, for prompts, the queue). Owned by the render thread; the
    controls of protocol.controls() act on it through the methods below."""

    HISTORY = 8  # recent frames whose latents a like/dislike may refer to

    def __init__(self, renderer: FrameRenderer, seed: int, pattern: Pattern = Pattern()):
        self.renderer = renderer
        self.rng = torch.Generator().manual_seed(seed)
        self.prefs = Preferences(renderer.pref_basis)
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
        # The condition (conditional models only).
        self.target = renderer.targets.first_target(self.rng)
        self.morph = None if self.target is None else ConditionMorph(self.target.row, MORPH_SECONDS)
        self.morph_progress: float | None = None if self.target is None else 1.0
        self.means: dict[str, torch.Tensor | None] = {"start": None, "end": None, "shown": None}
        self.queue: collections.deque[Target] = collections.deque()
        self.prompt_seconds = PROMPT_SECONDS_DEFAULT
        self.started: float | None = None     # when the target began to play (None: at the next frame)
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
        """Morph to a prompt now, or (queue) after what plays now; `reading` is its progan.conditioning.prompts.PromptReading."""
        target = self.renderer.targets.prompt_target(text, reading)
        if queue and self.target is not None and self.target.source == "prompt":
            if len(self.queue) >= MAX_QUEUE:
                raise ControlError(f"the queue is full ({MAX_QUEUE} prompts); {text!r} was not queued")
            self.queue.append(target)
            self.changed = True
        else:
            self.play(target, received)

    def clear_queue(self) -> None:
        self.queue.clear()
        self.changed = True

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
        self.walk.jump(latents_from_seeds([seed + i for i in range(self.walk.lanes)], self.renderer.latent_size))
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
        next frame is already part of the way; before any frame: there at once)."""
        if at is None:
            at = self.last_time if self.last_time is not None else -math.inf
        self.target = target
        self.morph.to(target.row, at)
        self.means = {"start": self.means["shown"], "end": None, "shown": None}
        self.started = at if math.isfinite(at) else None
        self.changed = True

    def advance_queue(self, now: float) -> None:
        """After prompt_seconds the next queued prompt plays; before the first prompt, another caption of the data.
        A frozen stream holds what it shows."""
        if self.started is None:
            self.started = now
        if self.frozen or now - self.started < self.prompt_seconds:
            return
        if self.queue:
            self.play(self.queue.popleft(), now)
        elif self.target.source == "data" and self.renderer.targets.captions:
            self.play(self.renderer.targets.caption_target(self.rng), now)

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

    # -- the render thread --------------------------------------------------------------------------------------
    def latent_of(self, frame: int | None, cell: int) -> torch.Tensor:
        """The walk latent shown in cell `cell` of frame `frame` (or of the latest frame if it is gone)."""
        for seq, z in reversed(self.history):
            if frame is None or seq == frame:
                return z[min(cell, z.shape[0] - 1)]
        return self.walk.position()[min(cell, self.walk.lanes - 1)]

    def step(self, now: float) -> bool:
        """Advance the walk by the time since the last frame (capped, so a stall does not make it jump), and the
        prompt queue; True if the frame changes (the walk moved, or the condition is on its way)."""
        dt = 0.0 if self.last_time is None else min(now - self.last_time, 0.5)
        self.last_time = now
        if self.target is not None:
            self.advance_queue(now)
        morphing = self.morph is not None and self.morph.active
        rate = self.pattern.rate(self.speed)
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

    def latents(self, seq: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """(z [lanes, L] with steering applied, psi [lanes], condition rows [lanes, cond_size] or None, truncation
        centres [lanes, C, 4, 4] or None for the renderer's) for frame `seq`, whose walk latents it records for
        likes."""
        offset = self.renderer.slider_offset(self.sliders)
        if self.pattern.motion == "walk":
            z = self.walk.position()
            steered = normalize(z) + offset
        else:
            steered = frame_latents(self.pattern, self.show_seed, self.phase, self.grid, self.anchors, self.prefs,
                                    offset)
            z = steered - offset
        self.history.append((seq, z))
        lanes = z.shape[0]
        cond = mean = None
        if self.morph is not None:
            row, self.morph_progress = self.morph.at(self.last_time if self.last_time is not None else 0.0)
            cond = row.view(1, -1).expand(lanes, -1)
            if self.psi < 1:
                mean = self.condition_mean(self.morph_progress).expand(lanes, -1, -1, -1)
            else:
                self.means["shown"] = None
        return steered, torch.full((lanes,), self.psi), cond, mean
