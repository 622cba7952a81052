"""The studio without the web: one generator baked for streaming (renderer.py), the render thread every viewer's
frames come from (sessions.py), the thread prompts are read on, a seed of its own for each viewer, and what the page
is told about it all. server.py serves an Engine over HTTP and WebSocket.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import os
import secrets
from typing import Callable

from progan.networks import Generator
from progan.studio.protocol import (HIT_ACTIONS, MAX_GRID, MAX_QUEUE, MAX_SETLIST_CHARS, MAX_SPEED, PROMPT_SECONDS,
                                    SLIDER_RANGE)
from progan.studio.audio import PEAK_FLOOR, PEAK_SECONDS, Reactions
from progan.studio.patterns import COUPLING, LAYOUTS, MOTIONS, PERIOD, Pattern
from progan.studio.renderer import FrameRenderer
from progan.studio.sessions import RenderLoop, Session
from progan.studio.setlist import Entry, resolve
from progan.studio.steering import ENTRY_MORPH_SECONDS, MORPH_SECONDS, PROMPT_SECONDS_DEFAULT
from progan.studio.targets import Target
from progan.studio.taste import Preferences
from progan.conditioning.encoder import TextEncoder, encoder_for
from progan.conditioning.prompts import MAX_PROMPT_CHARS
from progan.conditioning.rows import prompt_reading


class Engine:
    """The studio's work for one generator, short of serving it: the `renderer`, the `render_loop` (run between
    start() and stop()) with at most `max_clients` sessions, and for a text model the prompt reader.
    `text_encoder`: for a text model, a loaded progan.conditioning.encoder.TextEncoder to read prompts with, or the
    folder of the model's encoder when it has moved since training (default: the one the model was trained with,
    found where its record says and loaded in the background from the moment the engine is made).
    `setlist`: setlist.parse_setlist's entries, which every viewer starts playing (resolved here, its prompts read
    before the engine is made; SetlistError names a line this model cannot play). `condition_noise`: a text model's
    lanes each sample the conditioning augmentation's noise (False: every lane shows the code's mean); `reading`:
    "draw", a prompt's lanes each draw their own caption of its reading, or "mean" (see FrameRenderer)."""

    def __init__(self, G: Generator, *, sliders: int = 8, jpeg_quality: int = 80, max_clients: int = 32,
                 seed: int | None = None, text_encoder: TextEncoder | str | os.PathLike | None = None,
                 pattern: Pattern = Pattern(), taste: dict | None = None, setlist: list[Entry] | None = None,
                 setlist_name: str = "setlist", condition_noise: bool = False, reading: str = "draw"):
        self.G = G
        self.renderer = FrameRenderer(G, sliders=sliders, condition_noise=condition_noise, reading=reading)
        # Every viewer starts with this pattern and taste (a taste that does not fit the model is refused here).
        self.pattern, self.taste = pattern, taste
        if taste is not None:
            Preferences(self.renderer.pref_basis).load_profile(taste, self.renderer.taste_model)
        # One thread reads every prompt (the encoder is not made for concurrent calls, and a reading takes
        # milliseconds); its first job loads the encoder, which takes seconds.
        self.reader: concurrent.futures.ThreadPoolExecutor | None = None
        self.encoder: concurrent.futures.Future | None = None
        if self.renderer.controls["prompt"].unavailable is None:
            self.reader = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="progan-studio-prompts")
            if isinstance(text_encoder, TextEncoder):
                self.encoder = concurrent.futures.Future()
                self.encoder.set_result(text_encoder)
            else:
                self.encoder = self.reader.submit(encoder_for, G.meta["conditioning"]["encoder"], text_encoder)
        self.render_loop = RenderLoop(self.renderer, jpeg_quality=jpeg_quality)
        self.max_clients = max_clients
        self._seeds = itertools.count(secrets.randbits(31) if seed is None else seed)
        self.setlist = None if setlist is None else self.resolve_setlist(setlist, setlist_name)

    def start(self) -> None:
        self.render_loop.start()

    def stop(self) -> None:
        self.render_loop.stop()
        if self.reader is not None:
            self.reader.shutdown(wait=False, cancel_futures=True)

    def full(self) -> bool:
        return self.render_loop.count() >= self.max_clients

    def new_session(self, sink: Callable[[dict, bytes, bytes | None], None], **kwargs) -> Session:
        """A viewer's Session (`sink` and the keyword arguments as there) on a seed of its own; its stream starts
        when it is added to render_loop."""
        session = Session(self.renderer, sink, seed=next(self._seeds), pattern=self.pattern, **kwargs)
        if self.taste is not None:
            session.steering.prefs.load_profile(self.taste, self.renderer.taste_model)
            session.steering.walk.retarget()
        if self.setlist is not None:
            session.steering.load_setlist(self.setlist)
        return session

    def info(self) -> dict:
        """What the page is told on connect: the model, what it can be steered with, and the limits."""
        c = self.renderer.targets.conditioning
        return {
            **self.renderer.info(),
            "conditioning": {
                "kind": c.kind, "describe": c.describe, "classes": list(c.class_names),
                "class_unavailable": c.class_unavailable, "prompt_unavailable": c.prompt_unavailable,
                "max_prompt_chars": MAX_PROMPT_CHARS, "max_queue": MAX_QUEUE, "morph_seconds": MORPH_SECONDS,
                "prompt_seconds": PROMPT_SECONDS_DEFAULT, "prompt_seconds_range": list(PROMPT_SECONDS),
                "entry_morph_seconds": ENTRY_MORPH_SECONDS, "max_setlist_chars": MAX_SETLIST_CHARS},
            "audio": {**Reactions().as_json(), "hit_actions": list(HIT_ACTIONS), "peak_seconds": PEAK_SECONDS,
                      "peak_floor": PEAK_FLOOR},
            "pattern": self.pattern.as_json(), "patterns": {
                "motions": list(MOTIONS), "layouts": list(LAYOUTS), "coupling_range": list(COUPLING),
                "period_range": list(PERIOD)},
            "slider_range": SLIDER_RANGE, "max_speed": MAX_SPEED, "max_grid": MAX_GRID,
            "clients": self.render_loop.count(), "max_clients": self.max_clients, "text_encoder": self.encoder_state(),
        }

    # -- prompts ------------------------------------------------------------------------------------------------
    def encoder_state(self) -> str | None:
        """None (no prompts), "loading", "ready" or why it could not be loaded."""
        if self.encoder is None:
            return None
        if not self.encoder.done():
            return "loading"
        e = self.encoder.exception()
        return "ready" if e is None else f"failed: {e}"

    def resolve_setlist(self, entries: list[Entry], where: str = "setlist") -> list[Target]:
        """The entries as Targets (setlist.resolve), prompts read with the studio's encoder (waiting for it to load:
        call it off the event loop)."""
        return resolve(entries, self.renderer.targets, self.read_prompt, where)

    def read_prompt(self, text: str):
        """On the reader thread: the prompt -> progan.conditioning.prompts.PromptReading (PromptError, ConditionError or
        TextEncoderMissing say why not)."""
        return prompt_reading(self.G, text, self.encoder.result())
