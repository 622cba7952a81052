"""The studio: a live, steerable stream of fresh samples in the browser (`progan studio RUN_OR_MODEL`).

    server.py     HTTP and WebSocket: serves an Engine's page, frames and controls; access and rate limits
    protocol.py   the wire format and the control table both sides read (static/studio.js speaks it)
    engine.py     the studio without the web: renderer, render thread, prompt reader, a seed per viewer, page info
    sessions.py   per-viewer sessions, their flow control, and the render loop that batches every viewer's frame
    steering.py   one viewer's steering state (speed, truncation, sliders, likes, grid, its condition and prompt queue)
    renderer.py   the generator baked for streaming (SeFa, mean embedding, batched forward passes to uint8 frames)
    targets.py    what a conditional stream can be asked to show (classes, prompts, captions of the data)
    motion.py     how a stream moves: the latent walk, the condition and latent morphs, hits that die away
    patterns.py   the show's patterns: field and loop latents as pure functions of (seed, phase), and the layouts'
                  geometry (mirror, kaleidoscope, tile) the page draws
    setlist.py    setlists: a file of prompts, classes or seeds with their seconds, checked line by line, played in a
                  loop through a stream's prompt queue (`--setlist`)
    audio.py      music offline: a song's loudness and onsets (librosa) as the controls the page sends live
    show.py       the show without a browser: a pattern, setlist and song rendered frame for frame to MP4 or GIF
                  (`progan generate --pattern / --setlist / --audio`)
    taste.py      likes and dislikes as a preference that steers where the walk goes; taste profiles (JSON)
    frames.py     frames to uint8 pictures, grids, JPEG and PNG bytes
    static/       the page
"""


def run_studio(*args, **kwargs):
    """See progan.studio.server.run_studio; imported on call so `progan` starts without the web stack."""
    from progan.studio.server import run_studio as run
    return run(*args, **kwargs)
