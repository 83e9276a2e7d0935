#!/usr/bin/env bash
# The checks that need a GPU, as one script (run from the repository root on a CUDA machine):
#  1. the metric engine on CUDA equals CPU float64, and the per-epoch analysis of ResNet-50's paper
#     layers at n = 512, 224 px (every default measure on `positions` and `filter`, plus drift) in
#     float64 (the default) and float32, with float32's error beside it;
#  2. the float32 path's error distribution with CUDA's reductions (benchmarks/float32_error.py).
# Prints everything to stdout; about two minutes on an H100-class GPU.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0))"
echo "== per-epoch analysis on the GPU"
timeout 420 python3 benchmarks/bench_gpu_analysis.py --n 512 --image-size 224 || echo "bench_gpu_analysis failed or timed out (rc $?)"
echo "== float32 path on CUDA"
timeout 120 python3 benchmarks/float32_error.py --seeds 3 --device cuda || echo "float32_error failed or timed out (rc $?)"
