"""Studio throughput: frames/s and control-to-frame latency for 1, 4 and 16 viewers; with --prompts, how soon a
prompt turns the stream.

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

    python -m benchmarks.studio_fps --out studio_fps.json
    python -m benchmarks.studio_fps --model runs/demo --clients 1 4
    python -m benchmarks.studio_fps --prompts --trials 30 [--model /tmp/emorun/model]
"""

from __future__ import annotations

import argparse
import asyncio
import json
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


def measure_prompts(model, threads, device, trials) -> dict:
    ctx = mp.get_context("spawn")
    ready, stop = ctx.Queue(), ctx.Event()
    proc = ctx.Process(target=serve, args=(model, 32, threads, device, ready, stop, True), daemon=True)
    proc.start()
    try:
        port, size = ready.get(timeout=300)
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
    finally:
        stop.set()
        proc.join(timeout=30)
        if proc.is_alive():
            proc.terminate()


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def measure(model, resolution, clients_list, seconds, warmup, threads, device) -> list[dict]:
    ctx = mp.get_context("spawn")
    ready, stop = ctx.Queue(), ctx.Event()
    proc = ctx.Process(target=serve, args=(model, resolution, threads, device, ready, stop), daemon=True)
    proc.start()
    try:
        port, size = ready.get(timeout=120)
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
    finally:
        stop.set()
        proc.join(timeout=30)
        if proc.is_alive():
            proc.terminate()


HEAD = (f"{'res':>5} {'clients':>7} {'total f/s':>10} {'f/s/client':>11} {'min':>6} "
        f"{'ctl->frame ms':>14} {'p95':>6} {'render ms':>10} {'batch':>6}")


def format_row(r: dict) -> str:
    return (f"{r['resolution']:>5} {r['clients']:>7} {r['total_fps']:>10.1f} {r['fps_per_client_mean']:>11.1f} "
            f"{r['fps_per_client_min']:>6.1f} {r['control_to_frame_ms_median']:>14.1f} "
            f"{r['control_to_frame_ms_p95']:>6.1f} {r['render_ms_mean']:>10.2f} {r['batch_mean']:>6.1f}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", help="a model, run or checkpoint folder (default: random demo-width models)")
    p.add_argument("--resolutions", type=int, nargs="+", default=[32, 64])
    p.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    p.add_argument("--seconds", type=float, default=5.0, help="measured seconds per row (after a 1 s warm-up)")
    p.add_argument("--threads", type=int, default=max(1, (os.cpu_count() or 2) - 1),
                   help="torch threads in the server (progan studio's default: all cores but one)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--prompts", action="store_true",
                   help="time Enter -> first changed frame on a text-conditional model instead of frames/s")
    p.add_argument("--trials", type=int, default=20, help="--prompts: prompts timed")
    p.add_argument("--out", help="write the results as JSON here")
    args = p.parse_args(argv)
    if min(args.clients) < 1 or args.seconds <= 0 or args.trials < 1:
        p.error("--clients and --trials must be >= 1 and --seconds > 0")

    print(f"studio benchmark: {os.cpu_count()} CPUs, {args.threads} render threads, device {args.device}, "
          f"load average {os.getloadavg()[0]:.2f}", flush=True)
    if args.prompts:
        row = measure_prompts(args.model, args.threads, args.device, args.trials)
        if args.out:
            atomic_write_json(args.out, {
                "benchmark": "studio_fps --prompts",
                "model": args.model or "random weights at the demo widths, text_size 384, ca_size 32",
                "cpus": os.cpu_count(), "threads": args.threads, "device": args.device,
                "platform": platform.platform(), "python": sys.version.split()[0], "prompts": PROMPTS, "row": row})
        return 0
    print(HEAD, flush=True)
    rows = []
    for res in ([None] if args.model else args.resolutions):
        rows += measure(args.model, res or 0, args.clients, args.seconds, 1.0, args.threads, args.device)
    if args.out:
        atomic_write_json(args.out, {
            "benchmark": "studio_fps", "model": args.model or "random demo widths (fmap_base 512, fmap_max 64)",
            "cpus": os.cpu_count(), "threads": args.threads, "device": args.device, "seconds": args.seconds,
            "platform": platform.platform(), "python": sys.version.split()[0],
            "load_average_after": os.getloadavg(), "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
