#!/usr/bin/env bash
# The checks that need a GPU, as one script (run from the repository root on a CUDA machine):
#   suite     the test suite with CUDA visible: every run the tests start picks the GPU (--device auto);
#   metrics   the metric engine on CUDA equals CPU float64 on every view (bench_gpu_analysis.py checks it
#             first); the per-epoch analysis of ResNet-50's paper layers at n = 512, 224 px (the default
#             measures on `positions` plus drift, float64 and float32 with float32's error beside it;
#             then one epoch with the `filter` view too); ViT-B/16's twelve blocks at n = 256; the float32
#             path's error with CUDA's reductions; the similarity benchmark on CUDA;
#   overhead  a short ResNet-50 fine-tuning run at 224 px with the paper's layers (2 epochs of 2000
#             generated images, probe 256), plain, then with --autocast bf16 --channels-last, then with
#             --compile too: images/s with and without the per-epoch analysis;
#   processes the probe pass and evaluation on 1 process against 2 (bench_distributed.py): NCCL with a
#             GPU each where there are two, else gloo on the CPU cores;
#   filters   the `filter` view's per-matrix route against the batched one, side by side, with the
#             peers' CKA on the same features (bench_filter_gpu.py): ResNet-50's paper layers at
#             n = 512 and ViT-B/16's blocks at n = 256; the peers (cka-pytorch, torch-cka) are used
#             where installed in the benchmark's environment;
#   filter-overhead  ResNet-50 at 224 px on 20,000 generated images (bf16, channels-last): training
#             images/s with and without the default analyses, the filter view off and on.
# `benchmarks/gpu_check.sh` runs them all (about 13 minutes on an H100-class GPU with 16 cores);
# `benchmarks/gpu_check.sh overhead metrics` runs the ones named. Everything goes to stdout.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
sections=("$@")
[ ${#sections[@]} -eq 0 ] && sections=(suite metrics overhead processes filters filter-overhead)
wanted() { [[ " ${sections[*]} " == *" $1 "* ]]; }
step() { echo; echo "== $1"; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0))"

if wanted suite; then
  step "test suite, CUDA visible (stops at the first failure)"
  timeout 300 python3 -m pytest -x -q -p no:cacheprovider 2>&1 | tail -15 || echo "failed or timed out (rc $?)"
fi

if wanted metrics; then
  step "ResNet-50, default measures on positions + drift (CUDA float64 = CPU float64 checked first)"
  timeout 120 python3 benchmarks/bench_gpu_analysis.py --n 512 --metrics pwsm,procrustes,cka || echo "failed or timed out (rc $?)"
  step "ResNet-50, the filter view too (one epoch, float64)"
  timeout 150 python3 benchmarks/bench_gpu_analysis.py --n 512 --precisions float64 --epochs 1 || echo "failed or timed out (rc $?)"
  step "ViT-B/16, default measures on positions + drift"
  timeout 120 python3 benchmarks/bench_gpu_analysis.py --model vit_b_16 --n 256 --metrics pwsm,procrustes,cka || echo "failed or timed out (rc $?)"
  step "float32 path on CUDA"
  timeout 120 python3 benchmarks/float32_error.py --seeds 3 --device cuda || echo "failed or timed out (rc $?)"
  step "similarity benchmark on CUDA (small sizes)"
  timeout 60 python3 benchmarks/bench_similarity.py --device cuda --quick || echo "failed or timed out (rc $?)"
fi

if wanted overhead; then
  run50=(--model resnet50 --image-size 224 --train-images 2000 --epochs 2 --batch-size 64 --device cuda --workers 8)
  step "ResNet-50 at 224 px, paper layers: float32"
  timeout 150 python3 benchmarks/bench_overhead.py "${run50[@]}" || echo "failed or timed out (rc $?)"
  step "the same with --autocast bf16 --channels-last"
  timeout 150 python3 benchmarks/bench_overhead.py "${run50[@]}" --autocast bf16 --channels-last || echo "failed or timed out (rc $?)"
  step "the same with --autocast bf16 --channels-last --compile (epoch 1 includes compiling)"
  timeout 240 python3 benchmarks/bench_overhead.py "${run50[@]}" --autocast bf16 --channels-last --compile || echo "failed or timed out (rc $?)"
fi

if wanted processes; then
  if [ "$(python3 -c 'import torch; print(torch.cuda.device_count())')" -ge 2 ]; then
    step "1 process against 2 (NCCL, one GPU each), ResNet-50 at 224 px, 256 probe images"
    timeout 150 python3 benchmarks/bench_distributed.py --device cuda --model resnet50 --image-size 224 || echo "failed or timed out (rc $?)"
  else
    step "one GPU: 1 process against 2 on the CPU cores (gloo), ResNet-18 at 64 px"
    timeout 150 python3 benchmarks/bench_distributed.py || echo "failed or timed out (rc $?)"
  fi
fi

if wanted filters; then
  step "cuSOLVER's batched symmetric solver against torch's looped eigh, float64"
  timeout 60 python3 benchmarks/cusolver_probe.py || echo "failed or timed out (rc $?)"
  step "filter view: per-matrix route against the batched route, ResNet-50 paper layers, n = 512, 224 px"
  timeout 240 python3 benchmarks/bench_filter_gpu.py --n 512 || echo "failed or timed out (rc $?)"
fi

if wanted filter-overhead; then
  data=$(mktemp -d)/images
  run20k=(--model resnet50 --image-size 224 --stored-size 64 --data "$data" --train-images 20000 --epochs 1
          --batch-size 128 --device cuda --workers 12 --autocast bf16 --channels-last)
  step "ResNet-50, 224 px, 20,000 images, bf16 + channels-last: default analyses (filter view off)"
  timeout 200 python3 benchmarks/bench_overhead.py "${run20k[@]}" || echo "failed or timed out (rc $?)"
  step "the same with the filter view on (the default measures on positions and on filter)"
  timeout 200 python3 benchmarks/bench_overhead.py "${run20k[@]}" \
    --metrics pwsm,procrustes,cka,pwsm@filter,procrustes@filter,cka@filter || echo "failed or timed out (rc $?)"
fi

if wanted filters; then
  step "filter view: the same for ViT-B/16's blocks, n = 256"
  timeout 150 python3 benchmarks/bench_filter_gpu.py --model vit_b_16 --n 256 --old-filters 32 || echo "failed or timed out (rc $?)"
fi
