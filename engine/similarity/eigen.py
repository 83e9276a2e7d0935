"""Symmetric eigen-decompositions of many matrices at once, on the device that holds them.

torch's CUDA backend decomposes a batch of symmetric matrices larger than 32×32 one matrix at a time
(cuSOLVER's ``syevd`` in a loop): on an H200 with torch 2.11 that is 0.6 ms for a 49×49 matrix and
4.6 ms for 512×512 whatever the batch (benchmarks/gpu_linalg_probe.py). cuSOLVER ≥ 11.7 (CUDA 12.6.2)
has a batched solver, ``cusolverDnXsyevBatched``, which takes the whole batch in one call: 0.003 ms
per 49×49 matrix, 0.05 ms per 196×196, 0.37 ms per 512×512 and 2.4 ms per 1024×1024 on the same card,
with eigenvalues within 1e-15 of ``syevd``'s and residuals ‖AV − VΛ‖/‖A‖ ≈ 2e-15
(benchmarks/cusolver_probe.py). It is a dense solver, as exact as the looped one: nothing is
approximated, only the launches are shared.

:func:`symmetric_eigh` calls it through ``ctypes`` on the tensors' own memory, on torch's current
stream, for float32/float64 CUDA batches of at least two matrices up to :data:`BATCHED_MAX_SIZE`;
everything else (CPU tensors, one matrix, a cuSOLVER without the symbol, a matrix the batched solver
reports as failed) goes to ``torch.linalg.eigh``. torch itself uses the batched solver only up to
32×32 (torch 2.14's dispatch), which is why this module exists.

``ROUTE`` selects the route for benchmarks and tests: ``"auto"`` (the default: the batched solver and
the routes built on it wherever it applies), ``"batched"`` (those routes on any device, on torch's
solver where cuSOLVER's batched one is not at hand: how the CPU suite checks their arithmetic) or
``"looped"`` (``torch.linalg.eigh``/``svd`` one matrix at a time everywhere, the previous behaviour).
"""

from __future__ import annotations

import contextlib
import ctypes
import threading

import torch

# Above this size the batched solver was not measured; torch's looped syevd is used there.
BATCHED_MAX_SIZE = 2048
ROUTES = ("auto", "batched", "looped")
ROUTE = "auto"

_CUDA_R_32F, _CUDA_R_64F = 0, 1
_EIG_MODE_NOVECTOR, _EIG_MODE_VECTOR = 0, 1
_FILL_LOWER = 0
_lock = threading.Lock()
_solver: "_BatchedSolver | None | bool" = None  # None: not looked up yet; False: unavailable


@contextlib.contextmanager
def route(name: str):
    """Use ``name`` ("auto", "batched" or "looped") for the decompositions inside the block."""
    global ROUTE
    if name not in ROUTES:
        raise ValueError(f"unknown eigen route {name!r}; use one of {ROUTES}")
    previous, ROUTE = ROUTE, name
    try:
        yield
    finally:
        ROUTE = previous


class _BatchedSolver:
    """cusolverDnXsyevBatched through ctypes, one handle per CUDA device."""

    def __init__(self, library: ctypes.CDLL):
        self.lib = library
        self.handles: dict[int, tuple[ctypes.c_void_p, ctypes.c_void_p]] = {}
        self.host_work = (ctypes.c_byte * 1)()  # grown as needed, reused under the lock

    def host_workspace(self, size: int):
        """The host workspace of at least ``size`` bytes: allocated (and zero-filled) only when a
        call needs more than any before, not on every call."""
        if ctypes.sizeof(self.host_work) < size:
            self.host_work = (ctypes.c_byte * size)()
        return self.host_work

    def handle(self, device: torch.device):
        index = device.index if device.index is not None else torch.cuda.current_device()
        if index not in self.handles:
            handle, params = ctypes.c_void_p(), ctypes.c_void_p()
            with torch.cuda.device(index):
                if self.lib.cusolverDnCreate(ctypes.byref(handle)) != 0:
                    raise RuntimeError("cusolverDnCreate failed")
                if self.lib.cusolverDnCreateParams(ctypes.byref(params)) != 0:
                    raise RuntimeError("cusolverDnCreateParams failed")
            self.handles[index] = (handle, params)
        return self.handles[index]

    def __call__(self, a: torch.Tensor, vectors: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(eigenvalues ascending, eigenvectors as columns, info per matrix) of a contiguous (b, n, n)."""
        b, n, _ = a.shape
        data_type = _CUDA_R_64F if a.dtype == torch.float64 else _CUDA_R_32F
        work = a.contiguous().clone()  # overwritten by the eigenvectors (column-major: their transpose)
        values = torch.empty(b, n, dtype=a.dtype, device=a.device)
        info = torch.zeros(b, dtype=torch.int32, device=a.device)
        handle, params = self.handle(a.device)
        mode = _EIG_MODE_VECTOR if vectors else _EIG_MODE_NOVECTOR
        c_void_p, c_int, c_int64, c_size_t = ctypes.c_void_p, ctypes.c_int, ctypes.c_int64, ctypes.c_size_t
        with _lock:
            self.lib.cusolverDnSetStream(handle, c_void_p(torch.cuda.current_stream(a.device).cuda_stream))
            device_bytes, host_bytes = c_size_t(), c_size_t()
            status = self.lib.cusolverDnXsyevBatched_bufferSize(
                handle, params, c_int(mode), c_int(_FILL_LOWER), c_int64(n), c_int(data_type),
                c_void_p(work.data_ptr()), c_int64(n), c_int(data_type), c_void_p(values.data_ptr()),
                c_int(data_type), ctypes.byref(device_bytes), ctypes.byref(host_bytes), c_int64(b))
            if status != 0:
                raise RuntimeError(f"cusolverDnXsyevBatched_bufferSize returned {status}")
            device_work = torch.empty(max(1, device_bytes.value), dtype=torch.uint8, device=a.device)
            host_work = self.host_workspace(host_bytes.value)
            status = self.lib.cusolverDnXsyevBatched(
                handle, params, c_int(mode), c_int(_FILL_LOWER), c_int64(n), c_int(data_type),
                c_void_p(work.data_ptr()), c_int64(n), c_int(data_type), c_void_p(values.data_ptr()),
                c_int(data_type), c_void_p(device_work.data_ptr()), c_size_t(device_bytes.value),
                ctypes.cast(host_work, c_void_p), c_size_t(host_bytes.value), c_void_p(info.data_ptr()),
                c_int64(b))
            if status != 0:
                raise RuntimeError(f"cusolverDnXsyevBatched returned {status}")
            # the workspaces must outlive the kernels queued on the stream
            torch.cuda.current_stream(a.device).synchronize()
        return values, work.transpose(-1, -2), info


def _batched_solver() -> "_BatchedSolver | None":
    """The process's cuSOLVER, as torch loaded it, if it has the batched solver; else None."""
    global _solver
    if _solver is None:
        _solver = False
        try:
            # make torch load its cuSOLVER, then open that very library (never a second copy)
            torch.linalg.eigh(torch.eye(2, dtype=torch.float64, device="cuda"))
            with open("/proc/self/maps") as maps:
                path = next((line.split()[-1] for line in maps if "libcusolver.so" in line), None)
            if path is not None:
                library = ctypes.CDLL(path)
                if hasattr(library, "cusolverDnXsyevBatched"):
                    _solver = _BatchedSolver(library)
        except (OSError, RuntimeError, StopIteration):
            _solver = False
    return _solver or None


def solver_applies(device: torch.device, dtype: torch.dtype, size: int, batch: int) -> bool:
    """Whether a batch of ``batch`` symmetric size×size matrices goes to cuSOLVER's batched solver."""
    if ROUTE == "looped" or device.type != "cuda" or dtype not in (torch.float32, torch.float64):
        return False
    return batch >= 2 and 2 <= size <= BATCHED_MAX_SIZE and _batched_solver() is not None


def batched_route(device: torch.device, dtype: torch.dtype, size: int, batch: int) -> bool:
    """Whether the callers take their batched-solver route (:mod:`engine.similarity.singular`) for
    such a batch: where the batched solver applies (``auto``), always (``batched``: the same
    arithmetic on torch's solver, which is how the CPU tests check it) or never (``looped``)."""
    if ROUTE == "auto":
        return solver_applies(device, dtype, size, batch)
    return ROUTE == "batched"


def symmetric_eigh(a: torch.Tensor, vectors: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Eigenvalues (ascending) and, with ``vectors``, eigenvectors (columns) of symmetric (…, n, n),
    as ``torch.linalg.eigh`` gives them; ``None`` in place of the vectors when not asked for."""
    n = a.shape[-1]
    if not solver_applies(a.device, a.dtype, n, a.numel() // max(1, n * n)):
        if vectors:
            return torch.linalg.eigh(a)
        return torch.linalg.eigvalsh(a), None
    shape = a.shape
    flat = a.reshape(-1, shape[-2], shape[-1])
    values, basis, info = _batched_solver()(flat, vectors)
    failed = (info != 0).nonzero().flatten()
    if len(failed):  # never seen; decided per matrix, as torch would
        redo_values, redo_basis = torch.linalg.eigh(flat[failed])
        values[failed] = redo_values
        basis[failed] = redo_basis
    values = values.reshape(shape[:-1])
    return values, basis.reshape(shape) if vectors else None
