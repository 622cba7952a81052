"""The studio: a live, steerable stream of fresh samples in the browser (`progan studio RUN_OR_MODEL`).

server.py serves the page and WebSocket, render.py batches every viewer's frames on one render thread, steer.py
holds the maths (SeFa directions, truncation, latent walks, like/dislike preferences), static/ is the page.
"""


def run_studio(*args, **kwargs):
    """See progan.studio.server.run_studio; imported on call so `progan` starts without the web stack."""
    from progan.studio.server import run_studio as run
    return run(*args, **kwargs)
