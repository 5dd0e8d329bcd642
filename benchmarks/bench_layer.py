"""AttentiveNorm2d versus BatchNorm2d, forward + backward in training mode, as ratios taken in one run.

Per layer at ResNet-50 stage shapes (batch 32, --batch) and for a whole ResNet-50 training step. Each comparison
is made within one regime (eager with eager, torch.compile with torch.compile, same dtype and layout). Beside the
layer's torch path (impl="torch") runs the straightforward implementation: BN, then separate pooling and variance
passes, then a separate mixture affine; on CUDA also the fused Triton path (impl="triton"; under torch.compile its
kernels are custom ops the compiler leaves as they are, the small torch ops around them compiled).

    python benchmarks/bench_layer.py                  # eager and compiled per layer, eager whole step
    python benchmarks/bench_layer.py --step-regimes eager,compiled --step-batch 16
    python benchmarks/bench_layer.py --device cuda --dtype bf16 --channels-last   # bf16 autocast, NHWC, on a GPU
    python benchmarks/bench_layer.py --device cuda --batch 64 --step-batch 64       # fp32 NCHW, batch 64

--dtype bf16 / fp16 runs every candidate under autocast with half-precision inputs (Lightning's "bf16-mixed" and
"16-mixed"): parameters stay fp32, BN runs on the half-precision input, AN computes in fp32 internally.
--device auto (the default) takes CUDA when it is available and the CPU otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import platform

import torch
import torch.nn.functional as F
from common import device_name, interleaved_medians, save
from torch import nn

from an_lab.models import create
from an_lab.nn import AttentiveNorm2d

STAGES = ((64, 56, 10), (128, 28, 10), (256, 14, 20), (512, 7, 20))  # channels, side, K of ResNet-50's bn2
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


class Setting:
    """Device, autocast dtype and memory layout shared by every candidate of one benchmark run."""

    def __init__(self, device: torch.device, dtype: str, channels_last: bool) -> None:
        self.device, self.dtype_name, self.channels_last = device, dtype, channels_last
        self.fused = device.type == "cuda"  # AN's Triton path (on CPU tensors only through Triton's interpreter)
        self.dtype = DTYPES[dtype]
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format

    def autocast(self):
        if self.dtype is torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def tensor(self, t: torch.Tensor) -> torch.Tensor:
        """An input on the device, in the run's dtype and layout."""
        return t.to(self.device, self.dtype).contiguous(memory_format=self.memory_format)

    def module(self, module: nn.Module) -> nn.Module:
        """Parameters stay fp32 (autocast casts per op); only the device and the layout change."""
        return module.to(self.device, memory_format=self.memory_format)

    def describe(self) -> str:
        precision = "fp32" if self.dtype is torch.float32 else f"{self.dtype_name} autocast"
        return f"{precision}, {'NHWC (channels_last)' if self.channels_last else 'NCHW'}"


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


def impl_twin(model: nn.Module, impl: str) -> nn.Module:
    """A copy of `model` whose AN layers run `impl`."""
    twin = copy.deepcopy(model)
    for module in twin.modules():
        if isinstance(module, AttentiveNorm2d):
            module.impl = impl
    return twin


def _candidates(bn: nn.Module, an: nn.Module, setting: Setting, regime: str) -> dict[str, nn.Module]:
    """BN, AN's torch path, the straightforward AN and, on CUDA (or with --fused), AN's fused Triton path (compiled
    too: its kernels are custom ops there)."""
    an = impl_twin(an, "torch")
    candidates = {"bn": bn, "an": an, "an_straightforward": straightforward_twin(an)}
    if setting.fused:
        candidates["an_fused"] = impl_twin(an, "triton")
    return candidates


def _device_label(device: torch.device) -> str:
    """common.device_name() names the GPU whenever there is one; a CPU run on a GPU machine names the CPU."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if not torch.cuda.is_available():
        return device_name()
    return f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads"


def _regime(module: nn.Module, regime: str) -> nn.Module:
    return torch.compile(module) if regime == "compiled" else module


def bench_layers(regime: str, batch: int, rounds: int, setting: Setting) -> list[dict]:
    rows = []
    for channels, side, k in STAGES:
        torch.manual_seed(0)
        x = setting.tensor(torch.randn(batch, channels, side, side)).requires_grad_()
        grad = setting.tensor(torch.randn(batch, channels, side, side))
        candidates = _candidates(
            setting.module(nn.BatchNorm2d(channels)), setting.module(AttentiveNorm2d(channels, k)), setting, regime
        )
        layers = {name: _regime(layer, regime) for name, layer in candidates.items()}

        def step(layer: nn.Module, x=x, grad=grad):
            def run() -> None:
                with setting.autocast():
                    out = layer(x)
                out.backward(grad)

            return run

        timings = interleaved_medians({n: step(m) for n, m in layers.items()}, rounds=rounds, iterations=10)
        rows.append(_row(f"{batch}x{channels}x{side}x{side}", regime, *timings))
    return rows


def bench_step(regime: str, batch: int, rounds: int, setting: Setting) -> dict:
    torch.manual_seed(0)
    # Images stay fp32 as a data loader gives them; autocast casts them at the first convolution.
    images = torch.randn(batch, 3, 224, 224, device=setting.device).contiguous(memory_format=setting.memory_format)
    labels = torch.randint(0, 1000, (batch,), device=setting.device)
    models = _candidates(
        setting.module(create("resnet50", norm="bn")), setting.module(create("resnet50", norm="an")), setting, regime
    )
    if regime == "compiled":
        del models["an_straightforward"]  # one compilation of ResNet-50 fewer; the per-layer rows have it

    def step(model: nn.Module):
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        forward = _regime(model, regime)

        def run() -> None:
            optimizer.zero_grad(set_to_none=True)
            with setting.autocast():
                loss = F.cross_entropy(forward(images), labels)
            loss.backward()
            optimizer.step()

        return run

    timings = interleaved_medians({n: step(m) for n, m in models.items()}, rounds=rounds, iterations=1, warmup=2)
    return _row(f"ResNet-50 step, batch {batch}", regime, *timings)


def _row(shape: str, regime: str, seconds: dict[str, float], spread: dict[str, float]) -> dict:
    row = {
        "shape": shape,
        "regime": regime,
        "ms": {name: round(value * 1e3, 3) for name, value in seconds.items()},
        "spread": {name: round(value, 3) for name, value in spread.items()},
        "an_over_bn": round(seconds["an"] / seconds["bn"], 3),
    }
    if "an_straightforward" in seconds:
        row["straightforward_over_bn"] = round(seconds["an_straightforward"] / seconds["bn"], 3)
    if "an_fused" in seconds:
        row["fused_over_bn"] = round(seconds["an_fused"] / seconds["bn"], 3)
        row["fused_over_an"] = round(seconds["an_fused"] / seconds["an"], 3)
    return row


def _ms(ms: dict[str, float], name: str) -> str:
    return f"{ms[name]:.2f}" if name in ms else "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layer-regimes", default="eager,compiled")
    parser.add_argument("--step-regimes", default="eager")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--step-rounds", type=int, default=5)
    parser.add_argument("--batch", type=int, default=32, help="batch of the per-layer rows")
    parser.add_argument("--step-batch", type=int, default=16)
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--dtype", choices=tuple(DTYPES), default="fp32", help="half precision runs under autocast")
    parser.add_argument("--channels-last", action="store_true", help="inputs, layers and models in NHWC layout")
    parser.add_argument(
        "--fused", action="store_true", help="time AN's Triton path on the CPU too (with TRITON_INTERPRET=1: slow)"
    )
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: CUDA is not available on this machine")
    device_type = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    setting = Setting(torch.device(device_type), args.dtype, args.channels_last)
    setting.fused = setting.fused or args.fused

    rows = []
    for regime in filter(None, args.layer_regimes.split(",")):
        rows += bench_layers(regime, args.batch, args.rounds, setting)
    for regime in filter(None, args.step_regimes.split(",")):
        rows.append(bench_step(regime, args.step_batch, args.step_rounds, setting))

    print(
        f"device: {_device_label(setting.device)}, torch {torch.__version__}, {setting.describe()}, training mode, "
        "forward + backward"
    )
    fused = any("an_fused" in row["ms"] for row in rows)
    print("median of interleaved rounds; spread = (max - min) / median of the rounds; AN = impl='torch'")
    print(
        "| shape | regime | BN ms | AN ms | straightforward AN ms | "
        + ("fused AN ms | " if fused else "")
        + "AN / BN | straightforward / BN | "
        + ("fused / BN | spread BN, AN, fused |" if fused else "spread BN, AN |")
    )
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |" + (" ---: | ---: |" if fused else ""))
    for row in rows:
        ms, spread = row["ms"], row["spread"]
        print(
            f"| {row['shape']} | {row['regime']} | {ms['bn']:.2f} | {ms['an']:.2f} | {_ms(ms, 'an_straightforward')} "
            + (f"| {_ms(ms, 'an_fused')} " if fused else "")
            + f"| {row['an_over_bn']:.3f} | {row.get('straightforward_over_bn', '-')} "
            + (f"| {row['fused_over_bn']:.3f} " if "fused_over_bn" in row else "| = AN (compiled) " if fused else "")
            + f"| {spread['bn']:.0%}, {spread['an']:.0%}"
            + (f", {spread['an_fused']:.0%} |" if "an_fused" in spread else " |")
        )
    defaults = setting.dtype is torch.float32 and not setting.channels_last and setting.device.type == "cpu"
    name = "layer" if defaults else f"layer-{setting.device.type}-{args.dtype}{'-nhwc' if args.channels_last else ''}"
    results = {"device": _device_label(setting.device), "setting": setting.describe(), "rows": rows}
    print(f"saved {save(results, name)}")


if __name__ == "__main__":
    main()
