"""Operations and kernel launches per AttentiveNorm2d call, forward and backward, against BatchNorm2d: on the CPU.

Every aten op that reaches the dispatcher is counted with a TorchDispatchMode (training mode, running statistics
included). Views and allocations (detach, expand, t, empty_like, ...) launch nothing on a GPU: they are counted
apart, and the other ops ("compute ops") are each at least one kernel launch; a compute op counts as full-size when
one of its tensors has as many elements as the input. Paths:

- bn: nn.BatchNorm2d;
- torch: AttentiveNorm2d(impl="torch") as it runs on a GPU (the CPU-only native batch-norm shortcuts turned off);
- triton: AttentiveNorm2d(impl="triton"): its Triton kernel launches, counted at the launch, and the aten ops
  around them (the head and statistics, the allocations), run through Triton's interpreter on CPU tensors; the
  interpreter's own tensor handling inside a launch is not counted (on a GPU a launch is one kernel). On a GPU,
  where the reductions split planes across programs (fused.MIN_PROGRAMS), one launch forward and one small op
  backward come on top.

    python benchmarks/count_ops.py                      # fp32 input, and bf16 input under autocast
"""

from __future__ import annotations

import os

os.environ.setdefault("TRITON_INTERPRET", "1")  # before triton is imported: the fused kernels run on CPU tensors

import argparse
import collections
import importlib
from unittest import mock

import torch
from common import save
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from an_lab.nn import AttentiveNorm2d
from an_lab.nn import attentive_norm as attentive_norm_module

ALLOCATIONS = ("aten.empty", "aten.empty_like", "aten.new_empty", "aten.new_empty_strided", "aten.empty_strided")
KERNELS = ("_plane_moments_kernel", "_plane_affine_kernel", "_plane_sums_kernel", "_input_grad_kernel")


class OpCounter(TorchDispatchMode):
    """Counts aten ops, and those that touch a tensor of `full` elements; paused while a kernel launch runs."""

    def __init__(self, full: int) -> None:
        super().__init__()
        self.full, self.paused = full, False
        self.ops: collections.Counter[str] = collections.Counter()
        self.metadata_only = 0
        self.full_size = 0
        self.launches: collections.Counter[str] = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if not self.paused:
            name = str(func.overloadpacket)
            self.ops[name] += 1
            if func.is_view or name in ALLOCATIONS:
                self.metadata_only += 1
                return out
            tensors = [t for t in torch.utils._pytree.tree_leaves((args, kwargs, out)) if isinstance(t, torch.Tensor)]
            self.full_size += any(t.numel() == self.full for t in tensors)
        return out


class CountedKernel:
    """Stands in for a Triton kernel: counts each launch, and pauses the op counter while the launch runs."""

    def __init__(self, name: str, kernel, counters: list[OpCounter]) -> None:
        self.name, self.kernel, self.counters = name, kernel, counters

    def __getitem__(self, grid):
        launch = self.kernel[grid]

        def run(*args, **kwargs):
            counter = self.counters[-1]
            counter.launches[self.name] += 1
            counter.paused = True
            try:
                return launch(*args, **kwargs)
            finally:
                counter.paused = False

        return run


def count(layer: nn.Module, x: torch.Tensor, autocast: torch.dtype | None, counters: list[OpCounter]) -> dict:
    x = x.detach().requires_grad_()
    grad = torch.randn_like(x)
    result = {}
    for phase in ("forward", "backward"):
        counter = OpCounter(x.numel())
        counters.append(counter)
        with counter:
            if phase == "forward":
                with torch.autocast("cpu", dtype=autocast, enabled=autocast is not None):
                    out = layer(x)
            else:
                out.backward(grad)
        result[phase] = {
            "ops": sum(counter.ops.values()),
            "compute_ops": sum(counter.ops.values()) - counter.metadata_only,
            "full_size_ops": counter.full_size,
            "launches": sum(counter.launches.values()),
            "op_names": dict(counter.ops.most_common()),
        }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", default="8,64,14,14", help="N,C,H,W of the input (the counts do not depend on it)")
    parser.add_argument("--k", type=int, default=10)
    args = parser.parse_args()
    shape = tuple(int(v) for v in args.shape.split(","))
    fused = importlib.import_module("an_lab.nn.fused")
    counters: list[OpCounter] = []
    rows = []
    with mock.patch.object(attentive_norm_module, "_native_fits", lambda *a: False):  # the CUDA branch of today
        for dtype_name, dtype, autocast in (("fp32", torch.float32, None), ("bf16", torch.bfloat16, torch.bfloat16)):
            for path in ("bn", "torch", "triton"):
                torch.manual_seed(0)
                layer = nn.BatchNorm2d(shape[1]) if path == "bn" else AttentiveNorm2d(shape[1], args.k, impl=path)
                x = torch.randn(*shape).to(dtype)
                patches = [
                    mock.patch.object(fused, name, CountedKernel(name, getattr(fused, name), counters))
                    for name in KERNELS
                ]
                for patch in patches:
                    patch.start()
                try:
                    result = count(layer, x, autocast, counters)
                finally:
                    for patch in patches:
                        patch.stop()
                rows.append({"dtype": dtype_name, "path": path, **result})

    print(f"aten ops per call, training mode, input {shape}, K = {args.k} (bf16: input bf16 under autocast)")
    print("| input | path | aten ops fwd / bwd | compute ops fwd / bwd | full-size compute ops | Triton launches |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for row in rows:
        fwd, bwd = row["forward"], row["backward"]
        print(
            f"| {row['dtype']} | {row['path']} | {fwd['ops']} / {bwd['ops']} "
            f"| {fwd['compute_ops']} / {bwd['compute_ops']} "
            f"| {fwd['full_size_ops']} / {bwd['full_size_ops']} | {fwd['launches']} / {bwd['launches']} |"
        )
    print(f"saved {save({'shape': shape, 'k': args.k, 'rows': rows}, 'count_ops')}")


if __name__ == "__main__":
    main()
