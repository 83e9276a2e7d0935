"""Per-matrix cost of torch's float64 decompositions on a GPU (eigh, eigvalsh, svdvals with each driver, cholesky, qr, matmul) by size and batch: the measurements behind engine/similarity/eigen.py. python benchmarks/gpu_linalg_probe.py"""
import time, torch, sys
dev = "cuda"
torch.backends.cuda.matmul.allow_tf32 = False
print(torch.__version__, torch.version.cuda, torch.cuda.get_device_name(0), flush=True)

def sym(b, k, dtype=torch.float64):
    a = torch.randn(b, k, k + 8, device=dev, dtype=dtype)
    return a @ a.transpose(1, 2)

def timed(fn, x, reps=1):
    fn(x[:2]); torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(reps):
        fn(x)
    torch.cuda.synchronize()
    return (time.perf_counter() - t) / reps

ops = {
    "eigh": lambda a: torch.linalg.eigh(a),
    "eigvalsh": lambda a: torch.linalg.eigvalsh(a),
    "svdvals": lambda a: torch.linalg.svdvals(a),
    "svd-gesvdj": lambda a: torch.linalg.svd(a, full_matrices=False, driver="gesvdj"),
    "svdvals-gesvd": lambda a: torch.linalg.svd(a, full_matrices=False, driver="gesvd"),
    "cholesky": lambda a: torch.linalg.cholesky(a + 1e-3 * torch.eye(a.shape[-1], device=dev, dtype=a.dtype)),
    "qr": lambda a: torch.linalg.qr(a),
    "matmul": lambda a: a @ a,
}
budget = time.perf_counter() + 150
for k, batches in ((49, (64, 2048)), (196, (64, 1024)), (512, (16, 128)), (1024, (8, 32))):
    for name, fn in ops.items():
        row = []
        for b in batches:
            if time.perf_counter() > budget:
                row.append("skip"); continue
            x = sym(b, k)
            try:
                s = timed(fn, x)
                row.append(f"B={b}: {1e3 * s / b:8.3f} ms/matrix ({s:6.3f} s)")
            except Exception as e:
                row.append(f"B={b}: {type(e).__name__} {str(e)[:60]}")
        print(f"k={k:5d} {name:14s} " + " | ".join(row), flush=True)
    x = sym(64, k, torch.float32)
    print(f"k={k:5d} eigh-float32   B=64: {1e3 * timed(lambda a: torch.linalg.eigh(a), x) / 64:8.3f} ms/matrix", flush=True)
