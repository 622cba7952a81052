"""Sanity table: SWD and MS-SSIM of an untrained generator (same architecture, fresh init) against a trained one,
with the real-vs-real noise floor.

    python -m benchmarks.metrics_sanity runs/demo --num-images 2048
"""

import argparse
import json

import torch

from progan.data.dataset import PreparedDataset
from progan.metrics import evaluate
from progan.model_io import load_generator
from progan.networks import Generator


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model")
    parser.add_argument("--data", help="default: the dataset the run trained on")
    parser.add_argument("--num-images", type=int, default=2048)
    parser.add_argument("--out", help="also write the rows as JSON here")
    args = parser.parse_args()
    trained = load_generator(args.model)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        untrained = Generator(trained.cfg).eval().requires_grad_(False)
    untrained.lod = trained.lod
    dataset = PreparedDataset(args.data or trained.meta["dataset"])
    rows = []
    for name, G in (("untrained", untrained), (f"trained ({trained.meta['kimg']:.0f} kimg)", trained)):
        results = {r["metric"]: r for r in evaluate(G, dataset, ["swd", "msssim"], args.num_images, seed=0)}
        swd = results["swd"]
        rows.append({"generator": name, "swd_avg": swd["value"], "swd_levels": swd["levels"],
                     "swd_real_floor": swd["real_floor"], "msssim": results["msssim"]["value"],
                     "msssim_reals": results["msssim"]["reals"]})
    print(f"{'generator':<24} {'SWD x1e3 avg':>12} {'per level':>28} {'real floor':>10} {'MS-SSIM':>8} {'reals':>6}")
    for r in rows:
        levels = " ".join(f"{res}:{v:.1f}" for res, v in r["swd_levels"].items())
        print(f"{r['generator']:<24} {r['swd_avg']:>12.2f} {levels:>28} {r['swd_real_floor']:>10.2f} "
              f"{r['msssim']:>8.3f} {r['msssim_reals']:>6.3f}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
