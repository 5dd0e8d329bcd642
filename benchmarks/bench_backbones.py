"""One training step of the AOGNet and DenseNet backbones, AN against BN, eager, interleaved in one run.

    python benchmarks/bench_backbones.py                         # AOGNet-12M, 224x224, batch 8, CPU fp32
    python benchmarks/bench_backbones.py --models aognet_12m,densenet161 --batch 16 --rounds 5

A step is forward, cross-entropy, backward and an SGD update, in training mode; BN and AN models of one network
alternate within every round, so that drift of the machine hits both alike. The ratio is of the medians.
"""

from __future__ import annotations

import argparse

import torch
from common import device_name, interleaved_medians, save
from torch import nn

from an_lab.models import create
from an_lab.profiling import count_parameters


def _step(model: nn.Module, images: torch.Tensor, labels: torch.Tensor):
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

    def run() -> None:
        optimizer.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(images), labels).backward()
        optimizer.step()

    return run


def bench(name: str, batch: int, size: int, rounds: int, device: torch.device) -> dict:
    torch.manual_seed(0)
    models = {norm: create(name, norm=norm).to(device).train() for norm in ("bn", "an")}
    images = torch.randn(batch, 3, size, size, device=device)
    labels = torch.randint(0, 1000, (batch,), device=device)
    steps = {norm: _step(model, images, labels) for norm, model in models.items()}
    seconds, spread = interleaved_medians(steps, rounds=rounds, iterations=1, warmup=1)
    return {
        "model": name,
        "batch": batch,
        "image_size": size,
        "params": {norm: count_parameters(model) for norm, model in models.items()},
        "bn_s": seconds["bn"],
        "an_s": seconds["an"],
        "an_over_bn": seconds["an"] / seconds["bn"],
        "spread": spread,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="aognet_12m")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    print(f"device: {device_name()}, torch {torch.__version__}, fp32, NCHW, eager, training step")
    print("| model | batch | BN s/step | AN s/step | AN / BN | spread BN, AN |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    rows = []
    for name in args.models.split(","):
        row = bench(name, args.batch, args.image_size, args.rounds, device)
        rows.append(row)
        spread = f"{row['spread']['bn']:.0%}, {row['spread']['an']:.0%}"
        print(f"| {name} | {args.batch} | {row['bn_s']:.3f} | {row['an_s']:.3f} | {row['an_over_bn']:.3f} | {spread} |")
    print(f"saved {save({'device': device_name(), 'rows': rows}, 'backbones')}")


if __name__ == "__main__":
    main()
