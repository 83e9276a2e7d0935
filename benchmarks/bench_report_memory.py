"""Time and peak memory of reading a run with many step records: `ftdyn report`, and the app's workspace.

A run is the real one of tests/fixtures/run-steps (resnet18, distance and drift, --every-steps 2: two
epoch records, one 24.6 kB step record) with its step record repeated 1k, 10k, 100k times between
the epoch records (10k: 246 MB; 100k: 2.46 GB, written to --dir and deleted once measured). Each
figure is a fresh process's wall time and peak RSS (RUSAGE_CHILDREN of a small parent that only
starts it: a child's maxrss would count a copy of a large parent), for the code at --before (taken
with `git archive`, default HEAD: the commit before streaming reads, until that is committed) and the
working tree. The earlier reader held the whole file and every record, several times the file: its
children run under an address-space limit (--before-limit-gib) so that 100k cannot exhaust the
machine; a run past it is shown as such.

    python benchmarks/bench_report_memory.py                          # 0, 1k, 10k, 100k step records
    python benchmarks/bench_report_memory.py --counts 0 1000 --before <commit>
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REAL_RUN = ROOT / "tests" / "fixtures" / "run-steps"

# The parent of one measured process: sets the address-space limit, starts the command, prints
# "<seconds> <peak KiB> <exit status>".
PARENT = """
import resource, subprocess, sys, time
limit = int(sys.argv[1])
if limit:
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
start = time.perf_counter()
done = subprocess.run(sys.argv[2:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
seconds = time.perf_counter() - start
print(seconds, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, done.returncode)
sys.stderr.write(done.stderr.decode(errors="replace")[-300:])
"""

COMMANDS = {
    "report": "import sys; from ftdyn_tui.cli import main; sys.argv = ['ftdyn', 'report', sys.argv[1]]; main()",
    "app": ("import sys; from pathlib import Path; from ftdyn_tui.workspace import Workspace, part_series\n"
            "workspace = Workspace([Path(sys.argv[1])]); workspace.poll(); run = workspace.ordered()[0]\n"
            "assert not run.problem, run.problem\n"
            "part_series(run, 'distance', 'cka@positions', 'layer4.1', 'step')"),
}


def write_run(folder: Path, steps: int) -> int:
    """The real run with ``steps`` copies of its step record; returns the record file's size."""
    folder.mkdir(parents=True)
    for name in ("config.json", "status.json"):
        shutil.copy(REAL_RUN / name, folder / name)
    first, step, last = (REAL_RUN / "records.jsonl").read_bytes().splitlines(keepends=True)
    block = step * 1000
    with open(folder / "records.jsonl", "wb") as f:
        f.write(first)
        for _ in range(steps // 1000):
            f.write(block)
        f.write(step * (steps % 1000))
        f.write(last)
    return (folder / "records.jsonl").stat().st_size


def measure(tree: Path, what: str, run: Path, limit: int) -> tuple[float, float, str]:
    """(seconds, peak MiB, '' or why it failed) of one fresh process reading ``run``."""
    done = subprocess.run([sys.executable, "-c", PARENT, str(limit), sys.executable, "-c", COMMANDS[what], str(run)],
                          cwd=tree, env=dict(os.environ, PYTHONPATH=str(tree), COLUMNS="200"),
                          capture_output=True, text=True, check=True)
    seconds, peak, status = done.stdout.split()
    failed = "" if status == "0" else ("MemoryError" if "MemoryError" in done.stderr else f"exit {status}")
    return float(seconds), int(peak) / 1024, failed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", type=int, nargs="+", default=[0, 1000, 10_000, 100_000])
    parser.add_argument("--what", nargs="+", choices=sorted(COMMANDS), default=["report", "app"])
    parser.add_argument("--before", default="HEAD", help="the commit to compare with (git archive)")
    parser.add_argument("--before-limit-gib", type=float, default=8.0,
                        help="address-space limit of the earlier reader's processes (0: none)")
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()), help="where the runs are written")
    args = parser.parse_args()

    step_bytes = len((REAL_RUN / "records.jsonl").read_bytes().splitlines()[1]) + 1
    need = max(args.counts) * step_bytes * 1.05 + (64 << 20)
    free = shutil.disk_usage(args.dir).free
    if free < need:
        sys.exit(f"{args.dir} has {free / 2**30:.1f} GiB free; the largest run needs {need / 2**30:.1f} GiB: "
                 f"give --dir elsewhere or smaller --counts")
    work = Path(tempfile.mkdtemp(prefix="ftdyn-bench-", dir=args.dir))
    try:
        before = work / "before"
        before.mkdir()
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", args.before, "engine", "ftdyn_tui"],
                                 capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(before)], input=archive, check=True)
        trees = {"before": (before, int(args.before_limit_gib * 2**30)), "after": (ROOT, 0)}
        print(f"step record {step_bytes:,} bytes (a real one: {REAL_RUN.relative_to(ROOT)}); before = {args.before}, "
              f"its processes limited to {args.before_limit_gib:g} GiB of address space; after = the working tree\n")
        header = (f"{'read by':8} {'steps':>7} {'file MB':>8} │ {'before s':>9} {'peak MiB':>9} │ {'after s':>8} "
                  f"{'peak MiB':>9} │ {'time ×':>7} {'peak ÷':>7}")
        print(header)
        print("─" * len(header))
        failures = []
        for count in args.counts:
            run = work / f"run-{count}"
            size = write_run(run, count)
            for what in args.what:
                found = {name: measure(tree, what, run, limit) for name, (tree, limit) in trees.items()}
                (bt, bp, bf), (at, ap, af) = found["before"], found["after"]
                for name, (seconds, peak, failed) in found.items():
                    if failed:
                        failures.append(f"{name}, {what}, {count:,} steps: {failed} after {seconds:.1f} s at a peak "
                                        f"of {peak:.0f} MiB" + (f" (the {args.before_limit_gib:g} GiB limit)"
                                                                if name == "before" else ""))
                before_cells = f"{bt:9.2f} {bp:9.0f}" if not bf else f"{'failed*':>9} {'>' + format(bp, '.0f'):>9}"
                after_cells = f"{at:8.2f} {ap:9.0f}" if not af else f"{'failed*':>8} {ap:9.0f}"
                if af:
                    ratios = f"{'—':>7} {'—':>7}"
                elif bf:  # the earlier reader stopped at its limit: the ratio of peaks is at least this
                    ratios = f"{'—':>7} {'>' + format(bp / ap, '.0f'):>7}"
                else:
                    ratios = f"{at / bt:7.2f} {bp / ap:7.1f}"
                print(f"{what:8} {count:7,} {size / 1e6:8.1f} │ {before_cells} │ {after_cells} │ {ratios}", flush=True)
            shutil.rmtree(run)
        print("\ntime ×: after's wall time ÷ before's; peak ÷: before's peak RSS ÷ after's. Peaks include the "
              "interpreter and the imports (the 0-step run).")
        for line in failures:
            print(f"* {line}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
