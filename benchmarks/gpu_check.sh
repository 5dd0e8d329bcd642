#!/usr/bin/env bash
# The GPU checks of a session that is lent a CUDA machine, as one script (about 8 minutes on one H200):
# the tests up to the training layer on CUDA, then the layer and ResNet-50 throughput benchmarks in bf16, channels_last.
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
{ nvidia-smi -L; python3 -c 'import torch, torchvision; print(torch.__version__, torchvision.__version__, torch.cuda.get_device_name())'; } \
  2>&1 | tee "$OUT/machine.txt"
timeout 300 python3 -m pytest -q -p no:cacheprovider -p no:benchmark -n 8 tests/nn tests/models tests/lightning_modules \
  tests/test_config.py tests/test_stats.py tests/test_rundir.py "$@" 2>&1 | tee "$OUT/tests.txt" | tail -25
timeout 170 python3 benchmarks/bench_layer.py --device cuda --dtype bf16 --channels-last --step-batch 64 2>&1 \
  | tee "$OUT/bench_layer.txt"
timeout 150 python3 benchmarks/bench_throughput.py --rounds 2 --batches 40 --batch-size 128 --workers 12 2>&1 \
  | tee "$OUT/bench_throughput.txt"
cp benchmarks/results/*.json "$OUT"/ 2>/dev/null
exit 0
