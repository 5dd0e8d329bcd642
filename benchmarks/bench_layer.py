"""AttentiveNorm2d versus BatchNorm2d, forward + backward in training mode, as ratios taken in one run.

Per layer at ResNet-50 stage shapes (batch 32) and for a whole ResNet-50 training step. Each comparison is made
within one regime (eager with eager, torch.compile with torch.compile, same dtype and layout). Beside the fused
layer runs the straightforward implementation: BN, then separate pooling and variance passes, then a separate
mixture affine.

    python benchmarks/bench_layer.py                  # eager and compiled per layer, eager whole step
    python benchmarks/bench_layer.py --step-regimes eager,compiled --step-batch 16
"""

from __future__ import annotations

import argparse
import copy

import torch
import torch.nn.functional as F
from common import device_name, interleaved_medians, save
from torch import nn

from an_lab.models import create
from an_lab.nn import AttentiveNorm2d

STAGES = ((64, 56, 10), (128, 28, 10), (256, 14, 20), (512, 7, 20))  # channels, side, K of ResNet-50's bn2


class StraightforwardAttentiveNorm2d(AttentiveNorm2d):
    """The same layer and parameters computed the obvious way, with a pass over the input for each statistic."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        standardized = F.batch_norm(
            x, self.running_mean, self.running_var, None, None, self.training, self.momentum, self.eps
        )
        mean, var = x.mean(dim=(2, 3)), x.var(dim=(2, 3), correction=0)
        lam = self.attention(mean, var, x.shape[2] * x.shape[3])
        return (lam @ self.gamma)[:, :, None, None] * standardized + (lam @ self.beta)[:, :, None, None]


def straightforward_twin(model: nn.Module) -> nn.Module:
    twin = copy.deepcopy(model)
    for module in twin.modules():
        if type(module) is AttentiveNorm2d:
            module.__class__ = StraightforwardAttentiveNorm2d
    return twin


def _regime(module: nn.Module, regime: str) -> nn.Module:
    return torch.compile(module) if regime == "compiled" else module


def bench_layers(regime: str, rounds: int, device: torch.device) -> list[dict]:
    rows = []
    for channels, side, k in STAGES:
        torch.manual_seed(0)
        x = torch.randn(32, channels, side, side, device=device, requires_grad=True)
        grad = torch.randn_like(x)
        fused = AttentiveNorm2d(channels, k).to(device)
        layers = {
            "bn": _regime(nn.BatchNorm2d(channels).to(device), regime),
            "an": _regime(fused, regime),
            "an_straightforward": _regime(straightforward_twin(fused), regime),
        }

        def step(layer: nn.Module, x=x, grad=grad):
            return lambda: layer(x).backward(grad)

        timings = interleaved_medians({n: step(m) for n, m in layers.items()}, rounds=rounds, iterations=10)
        rows.append(_row(f"{channels}x{side}x{side}", regime, *timings))
    return rows


def bench_step(regime: str, batch: int, rounds: int, device: torch.device) -> dict:
    torch.manual_seed(0)
    images = torch.randn(batch, 3, 224, 224, device=device)
    labels = torch.randint(0, 1000, (batch,), device=device)
    an_model = create("resnet50", norm="an").to(device)
    models = {
        "bn": create("resnet50", norm="bn").to(device),
        "an": an_model,
        "an_straightforward": straightforward_twin(an_model),
    }

    def step(model: nn.Module):
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        forward = _regime(model, regime)

        def run() -> None:
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(forward(images), labels).backward()
            optimizer.step()

        return run

    timings = interleaved_medians({n: step(m) for n, m in models.items()}, rounds=rounds, iterations=1, warmup=2)
    return _row(f"ResNet-50 step, batch {batch}", regime, *timings)


def _row(shape: str, regime: str, seconds: dict[str, float], spread: dict[str, float]) -> dict:
    return {
        "shape": shape,
        "regime": regime,
        "ms": {name: round(value * 1e3, 3) for name, value in seconds.items()},
        "spread": {name: round(value, 3) for name, value in spread.items()},
        "an_over_bn": round(seconds["an"] / seconds["bn"], 3),
        "straightforward_over_bn": round(seconds["an_straightforward"] / seconds["bn"], 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layer-regimes", default="eager,compiled")
    parser.add_argument("--step-regimes", default="eager")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--step-rounds", type=int, default=5)
    parser.add_argument("--step-batch", type=int, default=16)
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

    rows = []
    for regime in filter(None, args.layer_regimes.split(",")):
        rows += bench_layers(regime, args.rounds, device)
    for regime in filter(None, args.step_regimes.split(",")):
        rows.append(bench_step(regime, args.step_batch, args.step_rounds, device))

    print(f"device: {device_name()}, torch {torch.__version__}, fp32, NCHW, training mode, forward + backward")
    print("median of interleaved rounds; spread = (max - min) / median of the BN and AN rounds")
    print("| shape | regime | BN ms | AN ms | straightforward AN ms | AN / BN | straightforward / BN | spread BN, AN |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for row in rows:
        ms, spread = row["ms"], row["spread"]
        print(
            f"| {row['shape']} | {row['regime']} | {ms['bn']:.2f} | {ms['an']:.2f} | {ms['an_straightforward']:.2f} "
            f"| {row['an_over_bn']:.3f} | {row['straightforward_over_bn']:.3f} "
            f"| {spread['bn']:.0%}, {spread['an']:.0%} |"
        )
    print(f"saved {save({'device': device_name(), 'rows': rows}, 'layer')}")


if __name__ == "__main__":
    main()
