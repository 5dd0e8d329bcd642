#!/usr/bin/env bash
# The GPU checks of a session that is lent a CUDA machine, as one script (about 7 minutes on one H100/H200; every
# step has its own time cap, 590 s in all, under the device tool's 600 s a call): the layer's tests on CUDA (the fused Triton path's CUDA cases
# included), then AN's torch path (impl=torch) against its fused Triton path (impl=triton) and BN, in the same runs:
#   1. per layer at the four ResNet-50 stage shapes, batch 64, bf16 autocast + channels_last, eager and compiled,
#      and the ResNet-50 training step (batch 64), eager and compiled;
#   2. the same per layer and eager step in fp32 NCHW;
#   3. images per second through train() (bench_throughput): BN, AN torch, AN fused;
#   4. aten ops and Triton launches per AN call (count_ops, on the CPU).
# Under torch.compile the fused path's kernels are custom ops (an_lab::plane_moments ...): the compiled rows time BN,
# AN's torch path (the compiler fuses its ops) and AN's fused path (the kernels as they are, the small ops compiled).
# A GPU machine without a registry gets the packages it lacks as wheels in .whl/ (git-ignored), made where pip works:
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux_2_28_x86_64 -d .whl \
#     pydantic pydantic-core annotated-types typing-inspection wandb optuna submitit ... (and their own needs)
# Results land in $OUT (or ./gpu-out).
set -uo pipefail
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || exit 1
  export PYTHONPATH=/tmp/site:$PWD
fi
export WANDB_MODE=offline WANDB_ERROR_REPORTING=false WANDB_SILENT=true PYTHONUNBUFFERED=1
unset TRITON_INTERPRET  # the kernels compile for the GPU (count_ops sets it for its own CPU run)
{ nvidia-smi -L; python3 -c 'import torch, torchvision, triton; print(torch.__version__, torchvision.__version__, triton.__version__, torch.cuda.get_device_name())'; } \
  2>&1 | tee "$OUT/machine.txt"
timeout 140 python3 -m pytest -q -p no:cacheprovider -p no:benchmark -n 8 tests/nn tests/models/test_models.py \
  tests/test_config.py tests/lightning_modules/test_training.py::test_bf16_mixed_channels_last_training_step "$@" 2>&1 \
  | tee "$OUT/tests.txt" | tail -25
timeout 230 python3 benchmarks/bench_layer.py --device cuda --dtype bf16 --channels-last --batch 64 --rounds 7 \
  --step-regimes eager,compiled --step-batch 64 2>&1 | tee "$OUT/bench_layer_bf16_nhwc.txt"
timeout 90 python3 benchmarks/bench_layer.py --device cuda --dtype fp32 --batch 64 --rounds 7 --layer-regimes eager \
  --step-regimes eager --step-batch 64 2>&1 | tee "$OUT/bench_layer_fp32_nchw.txt"
timeout 100 python3 benchmarks/bench_throughput.py --rounds 2 --batches 30 --batch-size 128 --workers 12 2>&1 \
  | tee "$OUT/bench_throughput.txt"
timeout 30 python3 benchmarks/count_ops.py 2>&1 | tee "$OUT/count_ops.txt"
cp benchmarks/results/*.json "$OUT"/ 2>/dev/null
exit 0
