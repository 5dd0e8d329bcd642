"""Training throughput of ResNet-50 with BN versus AN through the real pipeline (`train()` on `fake` data).

Images per second come from the run's result.json (data loading included, validation and the first epoch
excluded). BN and AN runs alternate, several rounds, in one invocation; the ratio is of the medians.
On a GPU it trains with bf16 autocast and channels_last, AN as model.an.impl torch and triton (the fused path);
on CPU in fp32 NCHW, AN as impl torch.

    python benchmarks/bench_throughput.py --rounds 3 --batches 4 --batch-size 16
"""

from __future__ import annotations

import argparse
import statistics
import tempfile

import torch
from common import device_name, save

from an_lab.config import resolve
from an_lab.lightning_modules.train import train

CANDIDATES = {"bn": ("bn", "auto"), "an": ("an", "torch"), "an_fused": ("an", "triton")}  # norm, model.an.impl


def run_once(candidate: str, output_dir: str, args: argparse.Namespace, gpu: bool) -> float:
    norm, impl = CANDIDATES[candidate]
    tree = {
        "model": {"name": "resnet50", "norm": norm, "an": {"impl": impl}},
        "data": {
            "name": "fake",
            "image_size": args.image_size,
            "batch_size": args.batch_size,
            "fake_size": args.batch_size * args.batches,
            "num_classes": 1000,
            "num_workers": args.workers,
        },
        "trainer": {
            "epochs": 2,  # the first epoch (warm-up) is left out of images_per_s
            "precision": "bf16-mixed" if gpu else "32",
            "channels_last": gpu,
            "deterministic": False,
        },
        "wandb": {"mode": "disabled"},
        "output_dir": output_dir,
    }
    return train(resolve(tree, "bench_throughput"), progress=False)["images_per_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batches", type=int, default=4, help="training batches per epoch")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    gpu = torch.cuda.is_available()

    samples: dict[str, list[float]] = {name: [] for name in CANDIDATES if gpu or name != "an_fused"}
    with tempfile.TemporaryDirectory() as scratch:
        for round_index in range(args.rounds):
            for name in samples:
                samples[name].append(run_once(name, f"{scratch}/{round_index}-{name}", args, gpu))
    medians = {name: statistics.median(values) for name, values in samples.items()}
    ratio = medians["an"] / medians["bn"]
    fused_ratio = medians["an_fused"] / medians["bn"] if "an_fused" in medians else None
    regime = "bf16-mixed, channels_last" if gpu else "fp32, NCHW"
    print(f"device: {device_name()}; ResNet-50, {args.image_size}x{args.image_size}, batch {args.batch_size}, {regime}")
    for norm, values in samples.items():
        rounds = ", ".join(f"{v:.1f}" for v in values)
        print(f"{norm}: median {medians[norm]:.1f} images/s over {args.rounds} rounds ({rounds})")
    print(f"AN / BN throughput: {ratio:.3f} (AN is {100 * (1 - ratio):+.1f}% slower)")
    if fused_ratio is not None:
        print(f"fused AN / BN throughput: {fused_ratio:.3f} (fused AN is {100 * (1 - fused_ratio):+.1f}% slower)")
    results = {"device": device_name(), "regime": regime, "samples": samples, "ratio": ratio}
    save({**results, "fused_ratio": fused_ratio}, "throughput")


if __name__ == "__main__":
    main()
