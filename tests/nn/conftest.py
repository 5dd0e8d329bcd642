"""The fused (Triton) path of AttentiveNorm2d is tested on CPU tensors through Triton's interpreter.

Triton picks between compiling for the GPU and interpreting when a kernel is defined, so TRITON_INTERPRET is set
here, before any test imports an_lab.nn.fused. Where CUDA is present it stays as the caller set it: the kernels then
compile for the GPU, the CUDA cases run them, and the CPU cases are skipped.
"""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
