#!/usr/bin/env bash
# The checks that need a GPU, as one script (run from the repository root on a CUDA machine):
#  1. the metric engine on CUDA equals CPU float64 on every view;
#  2. the per-epoch analysis of ResNet-50's paper layers at n = 512, 224 px: the default measures on
#     `positions` plus drift in float64 (the default) and float32, with float32's error beside it;
#     then one epoch with every default measure on the `filter` view too;
#  3. the same for ViT-B/16's twelve encoder blocks at n = 256;
#  4. the float32 path's error distribution with CUDA's reductions (benchmarks/float32_error.py).
# Prints everything to stdout; about three minutes on an H100-class GPU.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0))"
echo "== ResNet-50, default measures on positions + drift"
timeout 120 python3 benchmarks/bench_gpu_analysis.py --n 512 --metrics pwsm,procrustes,cka || echo "failed or timed out (rc $?)"
echo "== ResNet-50, the filter view too (one epoch, float64)"
timeout 150 python3 benchmarks/bench_gpu_analysis.py --n 512 --precisions float64 --epochs 1 || echo "failed or timed out (rc $?)"
echo "== ViT-B/16, default measures on positions + drift"
timeout 120 python3 benchmarks/bench_gpu_analysis.py --model vit_b_16 --n 256 --metrics pwsm,procrustes,cka || echo "failed or timed out (rc $?)"
echo "== float32 path on CUDA"
timeout 120 python3 benchmarks/float32_error.py --seeds 3 --device cuda || echo "failed or timed out (rc $?)"
