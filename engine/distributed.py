"""The processes of a run: one, or N under torch.distributed (``torchrun``; README, "Many GPUs").

ftdyn runs on torch.distributed as it is: ``ftdyn run --nproc-per-node N`` starts N copies of the
run through torchrun's own launcher, and ``torchrun … -m ftdyn_tui.cli run …`` (any rendezvous,
any number of nodes) does the same by hand. Inside, every process reads the environment torchrun
sets (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR…) through :func:`join_processes`.

What each process does:

* **Training** — DDP: every process trains on its own part of each epoch (a DistributedSampler
  seeded by (seed, epoch)) and gradients are averaged. ``--batch-size`` is the *effective* batch,
  split evenly over the processes, and ``--lr`` applies to it unchanged: the same settings mean
  the same optimisation on 1 or N processes (BatchNorm, which is per process, sees batch ÷ N).
* **Held-out evaluation and the probe pass** — exact: each image set is split into N contiguous
  shards of whole batches (:func:`batch_shard`; no padding and no image twice, unlike
  DistributedSampler; each image in the batch it has on one process, so its activations are the same);
  counts and sums are added over processes in float64, and the moments, per-filter sums and
  jackknife groups of the analyses likewise (:meth:`engine.similarity.LayerAccumulator.reduce`).
  Rank 0 then decomposes and writes: the numbers equal a single process's up to float64
  rounding of a different summation order.
* **The run directory** — rank 0 alone writes it; the others record nothing.

This module holds the collective operations the engine needs, so that the rest reads as if there
were one process (``processes.sum(t)`` is ``t`` itself when there is).
"""

from __future__ import annotations

import os
import signal
import socket
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch

from engine.errors import FtdynError, Stopped

# Rank 0 alone writes checkpoints and pictures, and a part that runs on rank 0 alone (shared
# invariance inverts images when it is built) may take many minutes while the others wait at the
# next collective. A dead process is noticed by torchrun (it stops the others), not by this timeout.
COLLECTIVE_TIMEOUT = timedelta(hours=2)

LAUNCHED = "FTDYN_LAUNCHED"  # set for the processes `ftdyn run --nproc-per-node` starts: it speaks for them
FAILURE_KEY = "ftdyn/failure"  # the first failing process's one-line message, in torchrun's store
PEER_STOPPED = "another process of the distributed run stopped"  # how a process words the loss of another


@dataclass
class Processes:
    """This process's place in the run. ``Processes()`` is a run of one."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    backend: str | None = None
    hosts: list[str] = field(default_factory=lambda: [socket.gethostname()])
    pids: list[int] = field(default_factory=lambda: [os.getpid()])

    @property
    def leader(self) -> bool:
        """Rank 0: the one process that writes the run directory."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1

    def batch_shard(self, n: int, batch: int) -> tuple[range, int]:
        return batch_shard(n, batch, self.world, self.rank)

    def describe(self) -> dict[str, Any]:
        """What status.json and config.json say of the processes."""
        return {"world_size": self.world, "backend": self.backend, "hosts": list(self.hosts), "pids": list(self.pids)}

    # -- collectives (each a no-op for a run of one) ----------------------------------------------

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """``tensor`` replaced, in place, by its sum over the processes (in its own dtype)."""
        if self.distributed:
            torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.SUM)
        return tensor

    def sum_float64(self, tensor: torch.Tensor) -> torch.Tensor:
        """``tensor`` replaced, in place, by its sum over the processes, added in float64."""
        if self.distributed:
            total = tensor.to(torch.float64)
            self.sum(total)
            tensor.copy_(total)
        return tensor

    def any(self, flag: bool) -> bool:
        """True on every process when ``flag`` is true on one (a stop asked for on any of them)."""
        return self.flags(flag)[0]

    def flags(self, *flags: bool) -> tuple[bool, ...]:
        """Each flag true on every process when it is true on one of them (one collective for all)."""
        if not self.distributed:
            return flags
        counts = self.sum(torch.tensor([int(flag) for flag in flags], device=self.device()))
        return tuple(bool(count) for count in counts.tolist())

    def broadcast(self, tensor: torch.Tensor) -> torch.Tensor:
        """Rank 0's ``tensor`` on every process (in place)."""
        if self.distributed:
            torch.distributed.broadcast(tensor, src=0)
        return tensor

    def broadcast_object(self, value: Any) -> Any:
        """Rank 0's ``value`` (picklable; between this run's own processes only)."""
        if not self.distributed:
            return value
        box = [value]
        torch.distributed.broadcast_object_list(box, src=0, device=self.device())
        return box[0]

    def gather_objects(self, value: Any) -> list[Any] | None:
        """Every process's ``value`` in rank order on rank 0; None on the others."""
        if not self.distributed:
            return [value]
        found = [None] * self.world if self.leader else None
        torch.distributed.gather_object(value, found, dst=0)
        return found

    def broadcast_buffers(self, module: torch.nn.Module) -> None:
        """Rank 0's buffers (BatchNorm's running statistics) on every process. DDP gives them to the
        others at each training forward only, so after an epoch each process's differ a little."""
        if self.distributed:
            for tensor in module.buffers():
                self.broadcast(tensor)

    def broadcast_module(self, module: torch.nn.Module) -> None:
        """Rank 0's parameters and buffers on every process (after work rank 0 did alone)."""
        if self.distributed:
            for tensor in module.state_dict().values():
                self.broadcast(tensor)

    def barrier(self) -> None:
        if self.distributed:
            torch.distributed.barrier()

    def device(self) -> torch.device:
        """Where this backend's collectives take their tensors."""
        return torch.device("cuda", torch.cuda.current_device()) if self.backend == "nccl" else torch.device("cpu")

    # -- failures -----------------------------------------------------------------------------

    def report_failure(self, message: str) -> None:
        """Leave this process's one-line failure where rank 0 finds it (torchrun's key-value store):
        the first one stays, since the others' failures follow from it."""
        store = self.store()
        if store is not None:
            try:
                store.compare_set(FAILURE_KEY, "", f"process {self.rank} of {self.world} "
                                                    f"({self.hosts[self.rank]}): {message}")
            except Exception:  # the store went with torchrun's agent: rank 0 reports what it saw
                pass

    def reported_failure(self) -> str | None:
        """The failure another process left (see :meth:`report_failure`), if any."""
        store = self.store()
        if store is None:
            return None
        try:
            if store.check([FAILURE_KEY]):
                return store.get(FAILURE_KEY).decode("utf-8", "replace")
        except Exception:
            pass
        return None

    def store(self):
        if not self.distributed:
            return None
        try:
            from torch.distributed.distributed_c10d import _get_default_store
            return _get_default_store()
        except Exception:
            return None

    def leave(self) -> None:
        if self.distributed and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def shard(n: int, world: int, rank: int) -> range:
    """The contiguous share of n items for process ``rank`` of ``world``: sizes differ by at most
    one, every item in exactly one share, in order (rank 0 the first ones)."""
    return range(n * rank // world, n * (rank + 1) // world)


def batch_shard(n: int, batch: int, world: int, rank: int) -> tuple[range, int]:
    """Process ``rank``'s contiguous share of n images cut into batches of ``batch`` — whole batches,
    so that every image is passed in the same batch as on one process (a network's float32 output
    for an image depends on the batch it is computed in: split differently, activations differ by
    ~1e-7 and distances by ~1e-9) — and the batch size. With fewer batches than processes the
    batches shrink to n ÷ world images, so that every process has one. Returns (images, batch)."""
    if world > 1 and -(-n // batch) < world:
        batch = max(1, n // world)
    batches = shard(-(-n // batch), world, rank)
    return range(min(batches.start * batch, n), min(batches.stop * batch, n)), batch


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def join_processes(device: str) -> Processes:
    """This process's :class:`Processes`: joins torchrun's process group when it started more than one
    (``nccl`` between CUDA devices, ``gloo`` on CPUs), else a run of one."""
    if not launched_by_torchrun() or int(os.environ["WORLD_SIZE"]) <= 1:
        return Processes()
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    cuda = device != "cpu" and torch.cuda.is_available()
    if cuda and local_rank >= torch.cuda.device_count():
        raise FtdynError(f"{os.environ.get('LOCAL_WORLD_SIZE', '?')} processes on this machine but "
                         f"{torch.cuda.device_count()} GPU(s): start one process per GPU (--nproc-per-node "
                         f"{torch.cuda.device_count()}), or --device cpu")
    if cuda:
        torch.cuda.set_device(local_rank)
    backend = "nccl" if cuda else "gloo"
    torch.distributed.init_process_group(backend, timeout=COLLECTIVE_TIMEOUT)
    processes = Processes(rank=rank, world=world, local_rank=local_rank, backend=backend)
    everyone = [None] * world
    torch.distributed.all_gather_object(everyone, (socket.gethostname(), os.getpid()))
    processes.hosts = [host for host, _ in everyone]
    processes.pids = [pid for _, pid in everyone]
    return processes


def current_processes() -> Processes:
    """This process's place in a process group its program started itself (the monitor in a user's
    distributed loop, Lightning's or Hugging Face's DDP); a run of one where there is none."""
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() <= 1:
        return Processes()
    processes = Processes(rank=dist.get_rank(), world=dist.get_world_size(),
                          local_rank=int(os.environ.get("LOCAL_RANK", 0)), backend=str(dist.get_backend()))
    everyone = [None] * processes.world
    dist.all_gather_object(everyone, (socket.gethostname(), os.getpid()))
    processes.hosts = [host for host, _ in everyone]
    processes.pids = [pid for _, pid in everyone]
    return processes


def launch(nproc_per_node: int, cli_args: list[str], run_dir: str) -> None:
    """``ftdyn run --nproc-per-node N``: N processes of ``ftdyn run CLI_ARGS`` on this machine, started
    by torchrun's own launcher (a standalone rendezvous on a free local port). When a process fails,
    torchrun stops the others; what the processes could not record themselves (a process killed by a
    signal, a stop that killed rank 0 before it wrote) this launcher records once they have all ended.
    Raises :class:`LaunchFailed`, or KeyboardInterrupt when the processes were stopped."""
    import logging

    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    # torchrun's own lines (progress, each failure with its exit code): the launcher says what failed
    for name in [*logging.root.manager.loggerDict, "torch.distributed.elastic"]:
        if name.startswith("torch.distributed.elastic"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
    os.environ[LAUNCHED] = "1"
    # the machine's cores shared among the processes (torchrun would give each one thread, and say so)
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc_per_node)))
    # torchrun stops the processes with SIGTERM and kills them SHUTDOWN_SECONDS later: time for rank 0
    # to finish a checkpoint it is writing
    args = parse_args(["--standalone", f"--nproc-per-node={nproc_per_node}", f"--shutdown-timeout={SHUTDOWN_SECONDS}",
                       "--module", "ftdyn_tui.cli", "run", *cli_args])
    try:
        run(args)
    except SignalException as exc:  # Ctrl-C or a kill reached the launcher: torchrun has stopped the processes
        name = signal.Signals(exc.sigval).name
        record_end(run_dir, "interrupted", f"stopped by {name}; continue with --resume")
        raise Stopped(name) from None
    except ChildFailedError as exc:
        if all(f.exitcode in INTERRUPTED for f in exc.failures.values()):  # a stop that reached them first
            record_end(run_dir, "interrupted", "stopped by a signal; continue with --resume")
            raise Stopped("SIGTERM" if any(f.exitcode == 143 for f in exc.failures.values()) else "SIGINT") from None
        rank, failure = exc.get_first_failure()
        # A process killed from outside (the OOM killer, kill -9, a crash) no later than the first failure
        # is its cause. Not torchrun's own stop (SIGTERM, then SIGKILL after its shutdown timeout: later),
        # nor a NCCL watchdog's abort (SIGABRT), which follows the loss of a peer.
        killed = {r: f for r, f in exc.failures.items() if f.exitcode < 0 and f.timestamp <= failure.timestamp
                  and f.signal_name() not in ("SIGTERM", "SIGABRT")}
        rank, failure = min(killed.items()) if killed else (rank, failure)
        failed = LaunchFailed(rank, nproc_per_node, failure.exitcode, failure.signal_name())
        # a process that exited with an error said why, through rank 0, unless rank 0 was killed first;
        # one killed by a signal said nothing
        record_end(run_dir, "failed", f"{failed}; recorded epochs are kept, continue with --resume",
                   over_peer_stopped=failed.exitcode < 0)
        raise failed from None


INTERRUPTED = (130, 143)  # a process's exit code after Ctrl-C or SIGTERM (ftdyn run's: 128 + the signal)
SHUTDOWN_SECONDS = 120


class LaunchFailed(Exception):
    """A process of ``ftdyn run --nproc-per-node`` ended with an error: the first one to fail."""

    def __init__(self, rank: int, world: int, exitcode: int, signal_name: str):
        self.rank, self.world, self.exitcode = rank, world, exitcode
        how = f"was killed by {signal_name}" if exitcode < 0 else f"exited with code {exitcode}"
        super().__init__(f"process {rank} of {world} {how}")


def record_end(run_dir: str, state: str, message: str, over_peer_stopped: bool = False) -> None:
    """After every process has ended: ``state`` and ``message`` into a status that still says running
    (rank 0 was killed before it could record the end) or, with ``over_peer_stopped``, that names no cause
    but the loss of another process. Never into the status of a writer that is alive (another run's)."""
    from engine.record import mark_stopped
    from engine.record_checks import status_problem
    from engine.run_files import STATUS, read_json
    from engine.untrusted import RunFormatError
    from engine.run_lock import writer_alive

    try:
        status = read_json(Path(run_dir) / STATUS)
    except (RunFormatError, OSError):
        return
    if not isinstance(status, dict) or writer_alive(run_dir) is True:
        return
    recorded, said = status.get("state"), str(status.get("message", ""))
    no_cause = recorded == "interrupted" or (recorded == "failed" and PEER_STOPPED in said)
    if recorded == "running" or (over_peer_stopped and no_cause):
        mark_stopped(run_dir, status if status_problem(status) is None else {}, state, message)
