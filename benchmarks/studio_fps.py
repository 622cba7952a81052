"""Studio throughput: frames/s and control-to-frame latency for 1, 4 and 16 viewers; with --prompts, how soon a
prompt turns the stream; with --browser, per pattern, frames rendered and displayed a second in a real browser; with
--paper, the paper-width generator's streaming speed (the GPU mode).

The server runs in its own process (as it would for a browser elsewhere), with random-weight models at the demo
widths (ModelConfig(resolution=R, latent_size=64, fmap_base=512, fmap_max=64)) or a real model (--model PATH).
Each viewer is a WebSocket client that returns a credit as soon as a frame arrives (a display that keeps up) and
moves a slider every 0.25 s, timing how long until a frame rendered after that control arrives.

--prompts: one viewer on a text-conditional model (--model, e.g. a run trained with --condition text, or a random
-weight one at the demo widths with text_size 384 whose captions are PROMPT_CAPTIONS, encoded by the real encoder)
freezes the walk, so that only the condition changes the picture, and sends a prompt every trial, alternating
between PROMPTS; it times, from sending the prompt: the first frame whose bytes differ from the still picture before
it (what the viewer sees turn), and the frame that ends the morph. Credits go back on a 60 Hz clock, as the page
returns them on animation frames. The text encoder is loaded before timing (the studio does it at start-up).

--browser: one viewer in Debian's chromium (headless, through Playwright, as the browser tests), for each pattern
(motion and layout, picked on the page): frames rendered a second (the frames that reach the page) and pictures
displayed a second (the page crossfades from the picture on screen to the latest frame on every animation frame, so
it displays at the screen's refresh rate when frames come slower), the screen's refresh rate (animation frames a
second) and the longest gap between two pictures while a slider moves every 100 ms (a control arriving must never
stall the display). Headless chromium draws without a GPU, on the same CPU as the server.

--paper: the studio's forward pass at the paper's widths (ModelConfig's defaults: latent 512, fmap_base 8192,
fmap_max 512; random weights, which cost the same as trained ones) at each of --resolutions, for each batch of
frames per step, precision (float32, bfloat16 autocast) and compilation (none, torch.compile's default, and
"reduce-overhead", which captures CUDA graphs: GPU only): ms per step and frames a second to uint8 frames on the
device, the copy to the host, and the JPEG encode per frame (Pillow, one thread, as the studio's render thread does
it) measured apart, so that the bottleneck is named. Made for a GPU (`--device cuda`, 256 to 1024); it runs on the
CPU at a small size (`--device cpu --resolutions 8 16`) to show that it works before a GPU is at hand.

    python -m benchmarks.studio_fps --out studio_fps.json
    python -m benchmarks.studio_fps --model runs/demo --clients 1 4
    python -m benchmarks.studio_fps --prompts --trials 30 [--model /tmp/emorun/model]
    python -m benchmarks.studio_fps --browser --resolutions 32 [--model runs/demo]
    python -m benchmarks.studio_fps --paper --device cuda                    # 256, 512, 1024
    python -m benchmarks.studio_fps --paper --device cpu --resolutions 8 16 --compile none default
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import multiprocessing as mp
import os
import platform
import statistics
import sys
import time

import websockets

from progan.fileio import atomic_write_json
from progan.studio.protocol import unpack_message


# The prompts timed (in the data of both the built-in emoji and PROMPT_CAPTIONS), and the captions of the random-weight
# text model.
PROMPTS = ["red heart", "snowflake", "sun", "a smiling face", "star", "a woman"]
PROMPT_CAPTIONS = ["red heart", "snowflake", "sun", "smiling face", "star", "woman bouncing ball", "female sign",
                   "monkey", "full moon", "person surfing", "heart on fire", "sparkles", "pizza", "rocket"]


def serve(model: str | None, resolution: int, threads: int, device: str, ready, stop, text: bool = False) -> None:
    """Child process: build the studio and serve on a free loopback port until `stop` is set. `text`: a text model
    (random weights unless `model`), its encoder loaded before `ready`."""
    import torch

    from progan.config import ModelConfig
    from progan.model_io import load_generator
    from progan.networks import Generator
    from progan.studio.server import BackgroundServer, Studio
    from progan.conditioning.encoder import load_text_encoder

    torch.set_num_threads(threads)
    encoder = None
    if model:
        G = load_generator(model, device)
    else:
        torch.manual_seed(0)
        cfg = ModelConfig(resolution=resolution, latent_size=64, fmap_base=512, fmap_max=64,
                          **({"text_size": 384, "ca_size": 32} if text else {}))
        G = Generator(cfg).to(device).eval().requires_grad_(False)
        if text:
            encoder = load_text_encoder()
            G.meta = {"kimg": 0.0, "source": "random weights", "conditioning": {
                "kind": "text", "encoder": encoder.info(), "captions": PROMPT_CAPTIONS,
                "caption_vectors": encoder.encode(PROMPT_CAPTIONS)}}
    with BackgroundServer(Studio(G, seed=0, max_clients=64, text_encoder=encoder)) as srv:
        if srv.studio.encoder is not None:
            srv.studio.encoder.result()  # loaded: a running studio has had seconds for it
        ready.put((srv.port, srv.studio.renderer.size))
        stop.wait()


async def viewer(url: str, seconds: float, warmup: float, index: int) -> dict:
    frames, latencies, render_ms, batches = 0, [], [], []
    async with websockets.connect(url, max_size=1 << 24) as ws:
        start = time.perf_counter()
        measure_from, end = start + warmup, start + warmup + seconds
        next_control, control_id, sent = start + 0.1 + 0.01 * index, 0, {}
        while True:
            now = time.perf_counter()
            if now >= end:
                break
            if now >= next_control:
                control_id += 1
                sent[control_id] = now
                await ws.send(json.dumps({"type": "slider", "index": 0, "value": float(control_id % 2),
                                          "id": control_id}))
                next_control = now + 0.25
            try:
                msg = await asyncio.wait_for(ws.recv(), timeout=max(0.001, min(end, next_control) - now))
            except asyncio.TimeoutError:
                continue
            if isinstance(msg, str):
                continue
            header, _ = unpack_message(msg)
            if header["kind"] != "frame":
                continue
            await ws.send('{"type":"credit"}')
            arrived = time.perf_counter()
            if arrived >= measure_from:
                frames += 1
                render_ms.append(header["render_ms"])
                batches.append(header["batch"])
            ack = header["ack"]
            for cid in [c for c in sent if ack is not None and c <= ack]:
                if sent[cid] >= measure_from:
                    latencies.append((arrived - sent[cid]) * 1e3)
                del sent[cid]
    return {"frames": frames, "fps": frames / seconds, "latencies": latencies, "render_ms": render_ms,
            "batches": batches}


async def run_clients(url: str, clients: int, seconds: float, warmup: float) -> list[dict]:
    return await asyncio.gather(*(viewer(url, seconds, warmup, i) for i in range(clients)))


async def prompt_trials(url: str, trials: int) -> dict:
    """One viewer, walk frozen: per trial, send a prompt and time the first changed frame and the morph's end."""
    first_changed, settled, read_ms, skipped = [], [], [], {}
    async with websockets.connect(url, max_size=1 << 24) as ws:
        owed, next_tick = 0, time.perf_counter()

        async def frame(timeout=10.0):
            """The next frame (header, payload, arrival time), returning credits on a 60 Hz clock."""
            nonlocal owed, next_tick
            deadline = time.perf_counter() + timeout
            while True:
                now = time.perf_counter()
                if now >= next_tick:
                    for _ in range(owed):
                        await ws.send('{"type":"credit"}')
                    owed, next_tick = 0, max(next_tick + 1 / 60, now)
                if now > deadline:
                    raise TimeoutError("no frame")
                try:
                    msg = await asyncio.wait_for(ws.recv(), timeout=max(0.001, next_tick - now))
                except asyncio.TimeoutError:
                    continue
                arrived = time.perf_counter()
                if isinstance(msg, str):
                    texts.append(json.loads(msg))
                    continue
                header, payload = unpack_message(msg)
                owed += 1
                return header, payload, arrived

        texts: list[dict] = []
        await ws.send(json.dumps({"type": "freeze", "value": True, "id": 1}))
        cid, trial = 1, 0
        while len(first_changed) < trials and trial < 3 * trials:
            prompt = PROMPTS[trial % len(PROMPTS)]
            trial += 1
            while True:  # settled: the ack of the last control, the morph at its end, and the same frame twice
                header, still, _ = await frame()
                if header["ack"] == cid and header["morph"] in (None, 1.0):
                    h2, again, _ = await frame()
                    if again == still:
                        break
            texts.clear()
            cid += 1
            sent = time.perf_counter()
            await ws.send(json.dumps({"type": "prompt", "text": prompt, "id": cid}))
            changed_at = None
            while True:
                header, payload, arrived = await frame()
                if changed_at is None and payload != still:
                    changed_at = arrived
                if header["ack"] == cid and header["morph"] == 1.0:
                    break
                refused = [t for t in texts if t["type"] in ("notice", "error")]
                if refused:
                    skipped[prompt] = refused[0]["message"]
                    break
            if prompt in skipped:
                continue
            if changed_at is None:  # same picture: the prompt read as what was shown already
                skipped[prompt] = "the picture did not change"
                continue
            first_changed.append((changed_at - sent) * 1e3)
            settled.append((arrived - sent) * 1e3)
            await asyncio.sleep(1.05)  # a stats message (once a second) with this prompt's reading time
            while not [t for t in texts if t["type"] == "stats"]:
                await frame()
            read_ms.append([t for t in texts if t["type"] == "stats"][-1]["read_ms"])
    return {"first_changed_ms": first_changed, "settled_ms": settled, "read_ms": read_ms, "skipped": skipped}


@contextlib.contextmanager
def served_studio(model, resolution, threads, device, prompts=False, timeout=120):
    """A studio serving `model` in its own process (so the measuring client does not share its cores' scheduler
    with it); yields (port, output resolution) and stops it on the way out."""
    ctx = mp.get_context("spawn")
    ready, stop = ctx.Queue(), ctx.Event()
    proc = ctx.Process(target=serve, args=(model, resolution, threads, device, ready, stop, prompts), daemon=True)
    proc.start()
    try:
        yield ready.get(timeout=timeout)
    finally:
        stop.set()
        proc.join(timeout=30)
        if proc.is_alive():
            proc.terminate()


def measure_prompts(model, threads, device, trials) -> dict:
    with served_studio(model, 32, threads, device, prompts=True, timeout=300) as (port, size):
        load_before = os.getloadavg()
        result = asyncio.run(prompt_trials(f"ws://127.0.0.1:{port}/ws", trials))
        first, done = result["first_changed_ms"], result["settled_ms"]
        row = {"resolution": size, "trials": len(first),
               "first_changed_ms_median": percentile(first, 0.5), "first_changed_ms_p90": percentile(first, 0.9),
               "first_changed_ms_min": min(first, default=float("nan")),
               "first_changed_ms_max": max(first, default=float("nan")),
               "settled_ms_median": percentile(done, 0.5), "read_ms_median": percentile(result["read_ms"], 0.5),
               "skipped": result["skipped"],
               "load_average_before": load_before, "load_average_after": os.getloadavg(),
               "first_changed_ms": [round(x, 1) for x in first]}
        print(f"{'res':>5} {'trials':>6} {'Enter->first changed frame ms: median':>38} {'p90':>7} {'min':>7} "
              f"{'max':>7} {'morph done ms':>14} {'reading ms':>11} {'load avg':>9}")
        print(f"{size:>5} {len(first):>6} {row['first_changed_ms_median']:>38.1f} {row['first_changed_ms_p90']:>7.1f} "
              f"{row['first_changed_ms_min']:>7.1f} {row['first_changed_ms_max']:>7.1f} "
              f"{row['settled_ms_median']:>14.1f} {row['read_ms_median']:>11.1f} {row['load_average_after'][0]:>9.2f}",
              flush=True)
        for prompt, why in result["skipped"].items():
            print(f"skipped {prompt!r}: {why}")
        return row


# ---------------------------------------------------------------------------------------------------------------
# --browser

BROWSER_PATTERNS = ["walk", "field", "loop", "field+mirror", "field+kaleidoscope", "loop+kaleidoscope6", "field+tile"]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]

# In the page, for `ms`: frames that arrived, pictures drawn, animation frames, and the gaps between pictures, while
# the first SeFa slider moves every 100 ms.
WATCH_PAGE = """(ms) => new Promise((done) => {
  const data = document.body.dataset, f0 = Number(data.frames), d0 = Number(data.displayed);
  const slider = document.querySelector('input.sefa');
  let ticks = 0, shown = Number(data.displayed), last = performance.now(), gaps = [], k = 0;
  const wiggle = setInterval(() => { slider.value = (k++ % 2) * 2; slider.dispatchEvent(new Event('input')); }, 100);
  const start = performance.now();
  const watch = (t) => {
    ticks++;
    if (Number(data.displayed) !== shown) { shown = Number(data.displayed); gaps.push(t - last); last = t; }
    if (t - start < ms) requestAnimationFrame(watch);
    else { clearInterval(wiggle);
           done({frames: Number(data.frames) - f0, displayed: Number(data.displayed) - d0, ticks, gaps,
                 seconds: (t - start) / 1000, render_ms: Number(document.getElementById('render').textContent)}); }
  };
  requestAnimationFrame(watch);
})"""


def measure_browser(model, resolution, threads, device, patterns, seconds) -> list[dict]:
    from playwright import sync_api

    from progan.studio.patterns import parse_pattern
    rows = []
    with served_studio(model, resolution, threads, device, timeout=120) as (port, size):
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1280, "height": 800})
                page.goto(f"http://127.0.0.1:{port}/")
                page.wait_for_function("() => Number(document.body.dataset.frames || 0) > 3", timeout=30000)
                for name in patterns:
                    pattern = parse_pattern(name)
                    page.select_option("#motion", pattern.motion)
                    page.select_option("#layout", pattern.layout)
                    if pattern.motion != "field":  # a field turns a 4x4 grid on; the others show one sample
                        page.select_option("#grid", "1")
                    page.wait_for_timeout(1000)  # warm up: the new motion's first frames, the layout's first draws
                    m = page.evaluate(WATCH_PAGE, seconds * 1000)
                    canvas = page.evaluate("[document.getElementById('view').width, "
                                           "document.getElementById('view').height]")
                    gaps = sorted(m["gaps"]) or [float("nan")]
                    row = {"pattern": name, "resolution": size, "canvas": canvas,
                           "rendered_fps": m["frames"] / m["seconds"], "displayed_fps": m["displayed"] / m["seconds"],
                           "refresh_hz": m["ticks"] / m["seconds"], "max_gap_ms": gaps[-1],
                           "p99_gap_ms": gaps[min(len(gaps) - 1, int(0.99 * len(gaps)))], "render_ms": m["render_ms"]}
                    rows.append(row)
                    print(format_browser_row(row), flush=True)
            finally:
                browser.close()
        return rows


BROWSER_HEAD = (f"{'pattern':<20} {'res':>4} {'canvas':>9} {'rendered f/s':>12} {'displayed f/s':>13} "
                f"{'refresh Hz':>10} {'max gap ms':>10} {'p99 gap':>8} {'render ms':>9}")


def format_browser_row(r: dict) -> str:
    canvas = f"{r['canvas'][0]}x{r['canvas'][1]}"
    return (f"{r['pattern']:<20} {r['resolution']:>4} {canvas:>9} {r['rendered_fps']:>12.1f} "
            f"{r['displayed_fps']:>13.1f} {r['refresh_hz']:>10.1f} {r['max_gap_ms']:>10.1f} {r['p99_gap_ms']:>8.1f} "
            f"{r['render_ms']:>9.1f}")


# ---------------------------------------------------------------------------------------------------------------
# --paper (the GPU mode)

def frame_step(net, level: int, alpha: float, dtype):
    """z [B, L] -> uint8 frames [B, H, W, 3] on z's device: the studio's forward pass (FrameRenderer.render) without
    its batching, under autocast when `dtype` is not float32."""
    import torch

    from progan.data.dataset import to_uint8

    def step(z):
        with torch.autocast(z.device.type, dtype=dtype, enabled=dtype != torch.float32):
            x = net.synthesize(net.embed(z), level, alpha)
        return to_uint8(x).permute(0, 2, 3, 1)
    return step


def sync(device) -> None:
    import torch
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device, seconds: float, least: int = 3) -> list[float]:
    """Milliseconds of each call of fn() (synchronised), for about `seconds` and at least `least` calls."""
    times, start = [], time.perf_counter()
    while len(times) < least or time.perf_counter() - start < seconds:
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append((time.perf_counter() - t0) * 1e3)
    return times


def measure_paper(device_name, resolutions, batches, dtypes, compiles, seconds, quality) -> list[dict]:
    import torch

    from progan.config import ModelConfig
    from progan.layers import inference_copy
    from progan.lod import level_and_alpha
    from progan.networks import Generator
    from progan.seeds import generator
    from progan.studio.frames import encode_jpeg

    device = torch.device(device_name)
    rows = []
    for res in resolutions:
        torch.manual_seed(0)
        G = Generator(ModelConfig(resolution=res)).to(device).eval().requires_grad_(False)
        net = inference_copy(G)
        level, alpha = level_and_alpha(G.lod, G.resolution)
        with torch.inference_mode():
            picture = frame_step(net, level, alpha, torch.float32)(torch.randn(1, G.latent_size, device=device))
        picture = picture[0].cpu().numpy()
        jpeg = timed(lambda: encode_jpeg(picture, quality), torch.device("cpu"), min(seconds, 2.0), least=5)
        jpeg_ms, jpeg_kb = statistics.median(jpeg), len(encode_jpeg(picture, quality)) / 1024
        for dtype_name in dtypes:
            dtype = getattr(torch, dtype_name)
            for mode in compiles:
                for batch in batches:
                    row = {"device": str(device), "resolution": res, "batch": batch, "dtype": dtype_name,
                           "compile": mode, "jpeg_ms": jpeg_ms, "jpeg_kib": jpeg_kb}
                    if mode == "reduce-overhead" and device.type != "cuda":
                        continue  # CUDA graphs: a GPU only
                    step = frame_step(net, level, alpha, dtype)
                    if mode != "none":
                        torch._dynamo.reset()  # each setting compiled afresh, its compile time its own
                        step = torch.compile(step, mode=mode)
                    z = torch.randn(batch, G.latent_size, device=device,
                                    generator=generator(0, "studio_fps", res, batch, device=device))
                    try:
                        with torch.inference_mode():
                            t0 = time.perf_counter()
                            out = step(z)
                            sync(device)
                            row["first_call_s"] = time.perf_counter() - t0  # compilation, when compiled
                            for _ in range(2):
                                out = step(z)  # CUDA graphs are recorded on the first calls after warm-up
                            sync(device)
                            render = timed(lambda: step(z), device, seconds)
                            copy = timed(lambda: step(z).cpu(), device, min(seconds, 2.0))
                    except (RuntimeError, torch.OutOfMemoryError) as e:  # out of memory, a backend that cannot
                        row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:160]}"
                        rows.append(row)
                        print(f"{res:>5} {batch:>5} {dtype_name:>9} {mode:>15}  {row['error']}", flush=True)
                        continue
                    del out
                    render_ms = statistics.median(render)
                    copy_ms = max(0.0, statistics.median(copy) - render_ms)  # the device-to-host copy alone
                    per_frame = {"generator": render_ms / batch, "copy to host": copy_ms / batch,
                                 "JPEG encode": jpeg_ms}
                    bottleneck = max(per_frame, key=per_frame.get)
                    row.update({
                        "step_ms": render_ms, "generator_fps": 1000 * batch / render_ms, "copy_ms": copy_ms,
                        "serial_fps": 1000 / sum(per_frame.values()),  # the studio today: one thread does it all
                        "pipelined_fps": 1000 / per_frame[bottleneck],  # each stage on its own, overlapping
                        "jpeg_threads_for_60": math.ceil(60 * jpeg_ms / 1000), "bottleneck": bottleneck})
                    rows.append(row)
                    print(format_paper_row(row), flush=True)
        del G, net
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return rows


PAPER_HEAD = (f"{'res':>5} {'batch':>5} {'dtype':>9} {'compile':>15} {'first call s':>12} {'ms/step':>9} "
              f"{'gen f/s':>9} {'copy ms':>8} {'JPEG ms':>8} {'serial f/s':>10} {'pipelined':>9}  bottleneck")


def format_paper_row(r: dict) -> str:
    return (f"{r['resolution']:>5} {r['batch']:>5} {r['dtype']:>9} {r['compile']:>15} {r['first_call_s']:>12.2f} "
            f"{r['step_ms']:>9.2f} {r['generator_fps']:>9.1f} {r['copy_ms']:>8.2f} {r['jpeg_ms']:>8.2f} "
            f"{r['serial_fps']:>10.1f} {r['pipelined_fps']:>9.1f}  {r['bottleneck']}")


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def measure(model, resolution, clients_list, seconds, warmup, threads, device) -> list[dict]:
    with served_studio(model, resolution, threads, device, timeout=120) as (port, size):
        url = f"ws://127.0.0.1:{port}/ws"
        rows = []
        for clients in clients_list:
            results = asyncio.run(run_clients(url, clients, seconds, warmup))
            latencies = [x for r in results for x in r["latencies"]]
            render = [x for r in results for x in r["render_ms"]]
            batches = [x for r in results for x in r["batches"]]
            per_client = [r["fps"] for r in results]
            rows.append({
                "resolution": size, "clients": clients, "total_fps": sum(per_client),
                "fps_per_client_mean": statistics.mean(per_client), "fps_per_client_min": min(per_client),
                "control_to_frame_ms_median": percentile(latencies, 0.5),
                "control_to_frame_ms_p95": percentile(latencies, 0.95), "controls_timed": len(latencies),
                "render_ms_mean": statistics.mean(render) if render else float("nan"),
                "batch_mean": statistics.mean(batches) if batches else float("nan"),
            })
            print(format_row(rows[-1]), flush=True)
        return rows


HEAD = (f"{'res':>5} {'clients':>7} {'total f/s':>10} {'f/s/client':>11} {'min':>6} "
        f"{'ctl->frame ms':>14} {'p95':>6} {'render ms':>10} {'batch':>6}")


def format_row(r: dict) -> str:
    return (f"{r['resolution']:>5} {r['clients']:>7} {r['total_fps']:>10.1f} {r['fps_per_client_mean']:>11.1f} "
            f"{r['fps_per_client_min']:>6.1f} {r['control_to_frame_ms_median']:>14.1f} "
            f"{r['control_to_frame_ms_p95']:>6.1f} {r['render_ms_mean']:>10.2f} {r['batch_mean']:>6.1f}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", help="a model, run or checkpoint folder (default: random demo-width models)")
    p.add_argument("--resolutions", type=int, nargs="+",
                   help="default 32 64; --browser: 32; --paper: 256 512 1024 on cuda, 8 16 on the cpu")
    p.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    p.add_argument("--seconds", type=float, default=5.0, help="measured seconds per row (after a 1 s warm-up)")
    p.add_argument("--threads", type=int, default=max(1, (os.cpu_count() or 2) - 1),
                   help="torch threads in the server (progan studio's default: all cores but one)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--prompts", action="store_true",
                   help="time Enter -> first changed frame on a text-conditional model instead of frames/s")
    p.add_argument("--trials", type=int, default=20, help="--prompts: prompts timed")
    p.add_argument("--browser", action="store_true",
                   help="per pattern, frames rendered and displayed a second in chromium")
    p.add_argument("--patterns", nargs="+", default=BROWSER_PATTERNS, help="--browser: the patterns")
    p.add_argument("--paper", action="store_true", help="the paper-width generator's streaming speed (GPU mode)")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 4, 16], help="--paper: frames per step")
    p.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"], choices=["float32", "bfloat16"],
                   help="--paper: precisions")
    p.add_argument("--compile", nargs="+", default=["none", "default", "reduce-overhead"],
                   choices=["none", "default", "reduce-overhead", "max-autotune"],
                   help="--paper: torch.compile modes (reduce-overhead: CUDA graphs, skipped on the cpu)")
    p.add_argument("--quality", type=int, default=80, help="--paper: JPEG quality (the studio's: 80)")
    p.add_argument("--out", help="write the results as JSON here")
    args = p.parse_args(argv)
    if min(args.clients) < 1 or args.seconds <= 0 or args.trials < 1 or min(args.batches) < 1:
        p.error("--clients, --trials and --batches must be >= 1 and --seconds > 0")
    if sum((args.prompts, args.browser, args.paper)) > 1:
        p.error("choose one of --prompts, --browser and --paper")

    print(f"studio benchmark: {os.cpu_count()} CPUs, {args.threads} render threads, device {args.device}, "
          f"load average {os.getloadavg()[0]:.2f}", flush=True)
    meta = {"cpus": os.cpu_count(), "threads": args.threads, "device": args.device, "platform": platform.platform(),
            "python": sys.version.split()[0]}
    if args.prompts:
        row = measure_prompts(args.model, args.threads, args.device, args.trials)
        if args.out:
            atomic_write_json(args.out, {
                "benchmark": "studio_fps --prompts",
                "model": args.model or "random weights at the demo widths, text_size 384, ca_size 32",
                **meta, "prompts": PROMPTS, "row": row})
        return 0
    if args.browser:
        res = (args.resolutions or [32])[0]
        print(BROWSER_HEAD, flush=True)
        rows = measure_browser(args.model, res, args.threads, args.device, args.patterns, args.seconds)
        if args.out:
            atomic_write_json(args.out, {
                "benchmark": "studio_fps --browser", "display": "crossfade between the last two rendered frames",
                "model": args.model or "random demo widths (fmap_base 512, fmap_max 64)", **meta,
                "seconds": args.seconds, "load_average_after": os.getloadavg(), "rows": rows})
        return 0
    if args.paper:
        import torch
        torch.set_num_threads(args.threads)
        resolutions = args.resolutions or ([256, 512, 1024] if args.device.startswith("cuda") else [8, 16])
        print(PAPER_HEAD, flush=True)
        rows = measure_paper(args.device, resolutions, args.batches, args.dtypes, args.compile, args.seconds,
                             args.quality)
        for res in resolutions:
            done = [r for r in rows if r["resolution"] == res and "error" not in r]
            if done:
                best = max(done, key=lambda r: r["pipelined_fps"])
                print(f"{res}x{res}: at best {best['generator_fps']:.1f} frames/s from the generator (batch "
                      f"{best['batch']}, {best['dtype']}, compile {best['compile']}), {best['pipelined_fps']:.1f} "
                      f"pipelined: the bottleneck is the {best['bottleneck']}; 60 frames/s "
                      f"{'reached' if best['pipelined_fps'] >= 60 else 'not reached'}", flush=True)
        if args.out:
            atomic_write_json(args.out, {
                "benchmark": "studio_fps --paper", "model": "paper widths (latent 512, fmap_base 8192, fmap_max 512), "
                "random weights", **meta, "torch": torch.__version__,
                "gpu": torch.cuda.get_device_name() if args.device.startswith("cuda") else None,
                "seconds": args.seconds, "rows": rows})
        return 0
    print(HEAD, flush=True)
    rows = []
    for res in ([None] if args.model else (args.resolutions or [32, 64])):
        rows += measure(args.model, res or 0, args.clients, args.seconds, 1.0, args.threads, args.device)
    if args.out:
        atomic_write_json(args.out, {
            "benchmark": "studio_fps", "model": args.model or "random demo widths (fmap_base 512, fmap_max 64)",
            **meta, "seconds": args.seconds, "load_average_after": os.getloadavg(), "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
