"""AN across processes (gloo on CPU): DDP, and synced batch statistics equal to one process on the whole batch.

PyTorch's own SyncBatchNorm refuses CPU tensors, so the synced model here holds AN layers only (head a1, whose
attention has no BatchNorm); the converter's handling of plain BN is checked structurally.
"""

import copy
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from an_lab.nn import AttentiveNorm2d

pytestmark = pytest.mark.distributed
WORLD = 2


def _model(head: str, impl: str = "auto") -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), AttentiveNorm2d(8, 4, head=head, impl=impl), nn.ReLU())


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return torch.randn(8, 3, 6, 6, generator=generator) * 2 + 1, torch.randn(8, 8, 6, 6, generator=generator)


def _worker(rank: int, mode: str, init_file: str, out_file: str, impl: str = "auto") -> None:
    if impl == "triton":
        os.environ["TRITON_INTERPRET"] = "1"  # the fused kernels on CPU tensors, set before triton is imported
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    if mode == "synced":
        model = AttentiveNorm2d.convert_sync_batchnorm(_model("a1", impl))
    else:
        model = DistributedDataParallel(_model("a2"))
    x, grad = _data()
    part = slice(rank * 4, rank * 4 + 4)
    x_local = x[part].clone().requires_grad_()
    out = model(x_local)
    out.backward(grad[part])
    module = model if mode == "synced" else model.module
    if mode == "synced":  # the loss is a sum over the ranks' samples, so its gradient is the ranks' sum
        for p in module.parameters():
            dist.all_reduce(p.grad)
    results = {"out": out.detach(), "x_grad": x_local.grad}
    results.update({f"grad.{n}": p.grad for n, p in module.named_parameters()})
    results.update({f"buffer.{n}": b for n, b in module.named_buffers()})
    gathered = [None] * WORLD
    dist.all_gather_object(gathered, results)
    if rank == 0:
        torch.save(gathered, out_file)
    dist.destroy_process_group()


def _run(tmp_path, mode: str, impl: str = "auto") -> list[dict]:
    args = (mode, str(tmp_path / "init"), str(tmp_path / "out.pt"), impl)
    mp.spawn(_worker, args=args, nprocs=WORLD, join=True)
    return torch.load(tmp_path / "out.pt")


TOL = {"atol": 1e-5, "rtol": 1e-4}


@pytest.mark.parametrize("impl", ["auto", "triton"])
def test_synced_statistics_equal_one_process_on_the_full_batch(tmp_path, impl):
    """Also with the fused path (through Triton's interpreter): its per-plane moments feed the same synced maths."""
    if impl == "triton":
        pytest.importorskip("triton")
    per_rank = _run(tmp_path, "synced", impl)
    model = _model("a1")
    x, grad = _data()
    x = x.clone().requires_grad_()
    out = model(x)
    out.backward(grad)

    torch.testing.assert_close(torch.cat([r["out"] for r in per_rank]), out.detach(), **TOL)
    torch.testing.assert_close(torch.cat([r["x_grad"] for r in per_rank]), x.grad, **TOL)
    for name, p in model.named_parameters():
        for rank in per_rank:
            torch.testing.assert_close(rank[f"grad.{name}"], p.grad, **TOL, msg=name)
    for name, buffer in model.named_buffers():
        torch.testing.assert_close(per_rank[0][f"buffer.{name}"], buffer, **TOL, msg=name)


def test_ddp_averages_gradients_of_per_process_statistics(tmp_path):
    per_rank = _run(tmp_path, "ddp")
    x, grad = _data()
    expected = {}
    for rank in range(WORLD):  # without sync each process normalizes its own half; DDP averages
        model = _model("a2")
        part = slice(rank * 4, rank * 4 + 4)
        model(x[part]).backward(grad[part] / WORLD)
        for name, p in model.named_parameters():
            expected[name] = expected.get(name, 0) + p.grad
    for name, value in expected.items():
        for rank in per_rank:
            torch.testing.assert_close(rank[f"grad.{name}"], value, **TOL, msg=name)


def test_convert_sync_batchnorm_keeps_an_layers_and_converts_plain_bn():
    model = nn.Sequential(AttentiveNorm2d(8, 4), nn.BatchNorm2d(8))
    converted = AttentiveNorm2d.convert_sync_batchnorm(copy.deepcopy(model))
    assert isinstance(converted[0], AttentiveNorm2d) and converted[0].sync_stats
    assert isinstance(converted[0].attention.norm, nn.SyncBatchNorm)
    assert isinstance(converted[1], nn.SyncBatchNorm)
