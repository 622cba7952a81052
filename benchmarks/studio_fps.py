"""Studio throughput: frames/s and control-to-frame latency for 1, 4 and 16 viewers.

The server runs in its own process (as it would for a browser elsewhere), with random-weight models at the demo
widths (ModelConfig(resolution=R, latent_size=64, fmap_base=512, fmap_max=64)) or a real model (--model PATH).
Each viewer is a WebSocket client that returns a credit as soon as a frame arrives (a display that keeps up) and
moves a slider every 0.25 s, timing how long until a frame rendered after that control arrives.

    python benchmarks/studio_fps.py --out studio_fps.json
    python benchmarks/studio_fps.py --model runs/demo --clients 1 4
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


def serve(model: str | None, resolution: int, threads: int, device: str, ready, stop) -> None:
    """Child process: build the studio and serve on a free loopback port until `stop` is set."""
    import torch

    from progan.config import ModelConfig
    from progan.model_io import load_generator
    from progan.networks import Generator
    from progan.studio.server import BackgroundServer, Studio

    torch.set_num_threads(threads)
    if model:
        G = load_generator(model, device)
    else:
        torch.manual_seed(0)
        cfg = ModelConfig(resolution=resolution, latent_size=64, fmap_base=512, fmap_max=64)
        G = Generator(cfg).to(device).eval().requires_grad_(False)
    with BackgroundServer(Studio(G, seed=0, max_clients=64)) as srv:
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
    p.add_argument("--out", help="write the results as JSON here")
    args = p.parse_args(argv)
    if min(args.clients) < 1 or args.seconds <= 0:
        p.error("--clients must be >= 1 and --seconds > 0")

    print(f"studio benchmark: {os.cpu_count()} CPUs, {args.threads} render threads, device {args.device}, "
          f"load average {os.getloadavg()[0]:.2f}", flush=True)
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
