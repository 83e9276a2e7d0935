"""Reliability: one writer per run, a signal or a failure of any kind recorded as such, nothing recorded
lost, and every bad input or environment a one-line error."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from PIL import Image

from conftest import TINY_RUN
from engine.record import effective_state, read_run
from engine.run_lock import LOCK, RunLock, RunLocked, lock_scope, writer_alive
from test_bad_input import assert_clean_error, run
from test_run import run_command, wait_for

# one worker runs this file: its module-scoped runs are recorded once (pytest-xdist, --dist loadgroup)
pytestmark = pytest.mark.xdist_group("reliability")


def epochs_recorded(run_dir: Path) -> list[int]:
    return [r["epoch"] for r in read_run(run_dir).epochs]


@pytest.fixture()
def start():
    """Start `ftdyn run` in the background; whatever a test leaves running is killed after it."""
    started = []

    def launch(out: Path, data: Path, *extra) -> subprocess.Popen:
        process = subprocess.Popen(run_command("--out", out, "--data", data, *TINY_RUN, *extra),
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        started.append(process)
        return process

    yield launch
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_second_writer_and_resume_of_a_live_run_are_refused_then_sigterm_interrupts(tmp_path, shapes_data, start,
                                                                                     cli):
    out = tmp_path / "run"
    first = start(out, shapes_data, "--epochs", "200")  # long enough to still be running whatever the machine
    assert wait_for(lambda: len(read_run(out).epochs) >= 1)
    assert writer_alive(out) is True and effective_state(read_run(out).status, run_dir=out) == "running"
    for extra in ((), ("--resume",)):
        assert_clean_error(cli("run", "--out", out, "--data", shapes_data, "--epochs", "200", *TINY_RUN, *extra),
                           "being written by", f"pid {first.pid} on host")
    # the run's images and its post-hoc results are its writer's too
    assert_clean_error(cli("vis", out, "--layer", "layer1.1", "--filter", "0"), "being written by")
    assert_clean_error(cli("transfer", "criticality", out), "being written by its run")
    assert not (out / "analyses").exists()
    first.send_signal(signal.SIGSTOP)  # Ctrl-Z, or a debugger: alive, holding the lock, writing nothing
    try:
        assert wait_for(lambda: effective_state(read_run(out).status, run_dir=out) == "suspended")
    finally:
        first.send_signal(signal.SIGCONT)
    assert effective_state(read_run(out).status, run_dir=out) == "running"
    first.send_signal(signal.SIGTERM)  # a scheduler's pre-emption, `kill`, `docker stop`
    _, stderr = first.communicate(timeout=120)
    assert first.returncode == 143 and "Traceback" not in stderr  # 128 + SIGTERM, as a shell reports a kill
    status = read_run(out).status
    assert status["state"] == "interrupted" and "SIGTERM" in status["message"]
    assert writer_alive(out) is False
    done = epochs_recorded(out)
    assert done == sorted(set(done))  # no epoch written twice
    assert cli("run", "--out", out, "--resume", "--epochs", str(done[-1] + 1), "--workers", "0").exit_code == 0
    assert epochs_recorded(out) == list(range(done[-1] + 2)) and read_run(out).state == "finished"


def test_a_killed_writer_leaves_no_stale_lock_and_reads_as_stalled_at_once(tmp_path, shapes_data, start):
    out = tmp_path / "run"
    process = start(out, shapes_data, "--epochs", "200")
    assert wait_for(lambda: len(read_run(out).epochs) >= 1)
    process.send_signal(signal.SIGKILL)
    process.wait()
    snapshot = read_run(out)
    assert snapshot.status["state"] == "running"  # nobody wrote a final state …
    assert snapshot.state == "stalled"  # … yet the lock, gone with the process, says so without waiting
    lock = RunLock(out)
    assert lock.acquire() is None  # no stale lock to clean up by hand
    lock.release()


def test_lock_names_its_holder_and_dies_with_it(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from engine.run_lock import RunLock
        RunLock({str(tmp_path)!r}).acquire()
        print("held", flush=True)
        time.sleep(60)
    """)], stdout=subprocess.PIPE, text=True, cwd=Path(__file__).parents[1])
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(RunLocked, match=f"pid {holder.pid} on host"):
        RunLock(tmp_path).acquire()
    holder.kill()
    holder.wait()
    assert writer_alive(tmp_path) is False
    assert (tmp_path / LOCK).exists()
    RunLock(tmp_path).acquire()


MOUNTS = """22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
40 22 0:40 / /shared rw,relatime shared:20 - nfs4 nas:/export rw,vers=4.2,hard,proto=tcp
41 22 0:41 / /scratch rw,relatime shared:21 - nfs nas:/scratch rw,vers=3,nolock,proto=tcp
42 41 0:42 / /scratch/local rw,relatime shared:22 - ext4 /dev/sdb1 rw
"""


@pytest.mark.parametrize("folder,says", [("/home/me/runs", None), ("/shared/runs/r1", None),
                                         ("/scratch/runs/r1", "nolock"), ("/scratch/local/r1", None)])
def test_lock_scope_names_nfs_mounts_whose_locks_stay_on_this_host(folder, says):
    scope = lock_scope(Path(folder), MOUNTS)
    assert scope is None if says is None else (says in scope and "only excludes a second writer on this host" in scope)


def jpeg_folder(tmp_path: Path, shapes_data: Path) -> Path:
    """The shapes data as JPEGs (the format whose truncation Pillow's verify() misses)."""
    data = tmp_path / "jpeg"
    for png in shapes_data.rglob("*.png"):
        target = data / png.relative_to(shapes_data).with_suffix(".jpg")
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.open(png).convert("RGB").save(target, quality=90)
    return data


def test_truncated_jpeg_is_skipped_at_the_scan_and_the_run_goes_on(tmp_path, shapes_data, cli):
    data = jpeg_folder(tmp_path, shapes_data)
    victims = sorted((data / "train" / "disc").glob("*.jpg"))[:1] + sorted((data / "val" / "square").glob("*.jpg"))[:1]
    for victim in victims:
        victim.write_bytes(victim.read_bytes()[: len(victim.read_bytes()) * 2 // 3])
        with Image.open(victim) as image:
            image.verify()  # what the scan used to rely on: it passes
    result = run(cli, data, tmp_path / "run")
    assert result.exit_code == 0, result.output
    assert "skipped 2 unreadable files" in result.output
    listed = (tmp_path / "run" / "skipped_files.txt").read_text().split()
    assert sorted(listed) == sorted(map(str, victims))
    assert read_run(tmp_path / "run").state == "finished"


def test_an_image_damaged_after_the_scan_is_one_line_naming_it(tmp_path, shapes_data, cli, monkeypatch):
    data = jpeg_folder(tmp_path, shapes_data)
    victim = sorted((data / "train" / "disc").glob("*.jpg"))[0]
    victim.write_bytes(victim.read_bytes()[:200])
    monkeypatch.setattr("engine.data.is_readable_image", lambda path: True)  # as if it broke after the scan
    out = tmp_path / "run"
    result = run(cli, data, out, "--workers", "1")  # from a DataLoader worker: its traceback folded away
    assert_clean_error(result, f"image '{victim}' cannot be decoded", "changed after the scan", "--resume")
    assert "Original Traceback" not in result.output
    assert read_run(out).status["state"] == "failed" and epochs_recorded(out) == [0]


def test_empty_class_folder_is_refused_by_name(tmp_path, shapes_data, cli):
    data = tmp_path / "data"
    shutil.copytree(shapes_data, data)
    (data / "train" / "hexagon").mkdir()
    (data / "train" / "hexagon" / "notes.txt").write_text("no images here")
    assert_clean_error(run(cli, data, tmp_path / "run"), "'hexagon'", "no readable images", "remove the folder")
    assert not (tmp_path / "run").exists()  # refused before anything was written


@pytest.mark.parametrize("where", ["out-in-data", "data-in-out"])
def test_out_and_data_must_not_nest(tmp_path, shapes_data, cli, where):
    data = tmp_path / "data"
    shutil.copytree(shapes_data / "train", data)  # one folder of class folders: a run inside would be a class
    if where == "out-in-data":
        result = run(cli, data, data / "runs" / "r1")
        assert_clean_error(result, "inside --data", "outside the data folder")
    else:
        result = run(cli, data, tmp_path)
        assert_clean_error(result, "inside --out")
    assert not (data / "runs").exists()


def test_runs_beside_train_and_val_are_allowed(tmp_path, shapes_data, cli):
    from engine.run_config import RunConfig, check_config

    data = tmp_path / "data"
    shutil.copytree(shapes_data, data)  # train/ and val/: only they are scanned
    check_config(RunConfig(model="resnet18", data=str(data), out=str(data / "runs" / "r1")))  # no error
    assert_clean_error(run(cli, data, data / "train" / "r2"), "inside --data")


@pytest.mark.parametrize("args,fragment", [
    (("--lr", "-1"), "--lr must be a finite number > 0"),
    (("--lr", "nan"), "--lr must be a finite number > 0"),
    (("--lr", "inf"), "--lr must be a finite number > 0"),
    (("--grad-clip", "0"), "--grad-clip must be a finite number > 0"),
    (("--weight-decay", "-0.1"), "--weight-decay must be a finite number ≥ 0"),
])
def test_impossible_settings_are_refused_before_anything_is_written(tmp_path, shapes_data, cli, args, fragment):
    assert_clean_error(run(cli, shapes_data, tmp_path / "run", *args), fragment)
    assert not (tmp_path / "run").exists()


def test_out_that_is_a_file(tmp_path, shapes_data, cli):
    (tmp_path / "run").write_text("a file")
    assert_clean_error(run(cli, shapes_data, tmp_path / "run"), "is a file, not a folder")


@pytest.fixture(scope="module")
def one_finished_run(tmp_path_factory, shapes_data) -> Path:
    out = tmp_path_factory.mktemp("finished") / "run"
    subprocess.run(run_command("--out", out, "--data", shapes_data, "--epochs", "1", *TINY_RUN), check=True,
                   capture_output=True, timeout=300)
    return out


@pytest.fixture()
def finished_run(tmp_path, one_finished_run) -> Path:
    """A copy of one finished 1-epoch run, for a test to damage."""
    out = tmp_path / "run"
    shutil.copytree(one_finished_run, out)
    (out / ".writer.lock").unlink(missing_ok=True)
    return out


def test_out_of_memory_is_recorded_as_failed_and_keeps_the_records(tmp_path, shapes_data, cli, monkeypatch):
    from engine.training import Trainer

    def exhausted(self, epoch):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory: "
                           "you tried to allocate 123456789 bytes")

    monkeypatch.setattr(Trainer, "train_epoch", exhausted)
    out = tmp_path / "run"
    assert_clean_error(run(cli, shapes_data, out), "out of memory (CPU RAM)", "--batch-size", "--resume")
    snapshot = read_run(out)
    assert snapshot.status["state"] == "failed" and "out of memory" in snapshot.status["message"]
    assert epochs_recorded(out) == [0]
    assert not [p for p in out.rglob(".*tmp")]


@pytest.mark.parametrize("damage", ["truncated", "pickle", "wrong-shapes", "not-a-checkpoint"])
def test_damaged_checkpoint_on_resume_is_one_line_and_loses_nothing(tmp_path, finished_run, cli, damage):
    out = finished_run
    last = out / "checkpoints" / "last.pt"
    before = (out / "records.jsonl").read_bytes()
    if damage == "truncated":
        last.write_bytes(last.read_bytes()[:1000])
    elif damage == "pickle":
        class Exploit:
            def __reduce__(self):
                return (os.system, ("touch " + str(tmp_path / "pwned"),))
        last.write_bytes(pickle.dumps({"model": Exploit(), "epoch": 1}))
    elif damage == "wrong-shapes":
        state = torch.load(last, weights_only=True)
        state["model"] = {k: torch.zeros(3) for k in state["model"]}
        torch.save(state, last)
    else:
        torch.save({"hello": torch.zeros(1)}, last)
    result = cli("run", "--out", out, "--resume", "--epochs", "2", "--workers", "0")
    assert_clean_error(result, "checkpoint" if damage != "wrong-shapes" else "does not fit this run")
    assert (out / "records.jsonl").read_bytes() == before
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize("config,fragment", [
    ("[]", "holds a list"),
    ("{not json", "config.json is not valid JSON"),
    ('{"run": {"model": 3}, "dataset": {"classes": []}, "model": {}, "layers": []}', "'run.model' is not str"),
    ('{"run": {"wings": 2}, "dataset": {"classes": []}, "model": {}, "layers": []}', "unknown setting 'wings'"),
    ('{"schema": 2}', "no run, dataset, model and layers settings"),
])
def test_foreign_or_damaged_config_on_resume_and_vis(finished_run, cli, config, fragment):
    out = finished_run
    (out / "config.json").write_text(config)
    assert_clean_error(cli("run", "--out", out, "--resume", "--epochs", "2"), fragment)
    assert_clean_error(cli("vis", out, "--layer", "layer1", "--filter", "0"), fragment)


def in_small_filesystem(script: str, size: str, where: Path) -> subprocess.CompletedProcess:
    """``script`` (sh) with $FS a fresh tmpfs of ``size`` mounted on ``where``, in a private user and mount
    namespace (no root needed where unprivileged user namespaces are allowed); gone when it ends."""
    where.mkdir(exist_ok=True)
    return subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c",
                           f'mount -t tmpfs -o size={size} none "$FS" && {script}'],
                          capture_output=True, text=True, timeout=600, env=dict(os.environ, FS=str(where)))


@pytest.fixture()
def small_filesystems(tmp_path):
    if shutil.which("unshare") is None:
        pytest.skip("no `unshare` here to mount a small file system")
    probe = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c",
                            f'mount -t tmpfs -o size=1m none "{tmp_path}"'], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"this environment does not allow a private tmpfs mount ({probe.stderr.strip()[:120]})")


def test_disk_full_is_recorded_as_failed_with_no_temp_files_and_epoch_0_kept(tmp_path, shapes_data, small_filesystems):
    # resnet18's checkpoints: epoch 0 (45 MB model, no optimiser state yet) fits in 160 MB, epoch 1's
    # last.pt (model + Adam's two moments, ~135 MB) does not: the disk fills mid-run.
    command = " ".join(map(str, run_command("--out", "$FS/run", "--data", shapes_data, "--epochs", "3", *TINY_RUN)))
    report = tmp_path / "report"
    script = (f'{command} 2> "{report}.err"; echo $? > "{report}.rc"; '
              f'cp "$FS/run/status.json" "$FS/run/records.jsonl" "{tmp_path}/"; '
              f'ls -A "$FS/run" "$FS/run/checkpoints" > "{report}.ls"')
    result = in_small_filesystem(script, "160m", tmp_path / "fs")
    assert result.returncode == 0, result.stderr
    stderr = Path(f"{report}.err").read_text()
    assert Path(f"{report}.rc").read_text().strip() == "2", stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "disk full" in errors[0] and "--resume" in errors[0] and "Traceback" not in stderr
    status = json.loads((tmp_path / "status.json").read_text())
    assert status["state"] == "failed" and "disk full" in status["message"]
    assert [json.loads(line)["epoch"] for line in (tmp_path / "records.jsonl").read_text().splitlines()
            if json.loads(line)["kind"] == "epoch"] == [0]
    listing = Path(f"{report}.ls").read_text()
    assert ".tmp" not in listing and "last.pt" in listing, listing


def test_read_only_out_is_one_line(tmp_path, shapes_data, small_filesystems):
    command = " ".join(map(str, run_command("--out", "$FS/run", "--data", shapes_data, "--epochs", "1", *TINY_RUN)))
    script = f'mount -o remount,ro "$FS" && {command}'
    result = in_small_filesystem(script, "1m", tmp_path / "fs")
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 2 and len(errors) == 1 and "Read-only" in errors[0], result.stderr


# ---------------------------------------------------------------------------------------------
# Second round: a last batch of one, misleading or silent messages


@pytest.mark.parametrize("batch", [1, 2, 3, 4, 7])
@pytest.mark.parametrize("size", [1, 2, 5, 8, 9, 13, 15, 22])
def test_batches_leave_out_only_a_last_batch_of_one(size, batch):
    from torch.utils.data import DataLoader, RandomSampler

    from engine.training import WithoutLoneLastBatch, lone_last_image

    order = list(RandomSampler(range(size), generator=torch.Generator().manual_seed(size)))
    batches = list(WithoutLoneLastBatch(order, batch))
    plain = [order[i:i + batch] for i in range(0, size, batch)]  # every image, the last batch shorter
    lone = batch > 1 and size > 1 and size % batch == 1
    assert lone_last_image(size, batch) == lone
    assert batches == (plain[:-1] if lone else plain) and len(WithoutLoneLastBatch(order, batch)) == len(batches)
    assert all(len(b) > 1 for b in batches) or batch == 1 or size == 1
    # the order an earlier ftdyn trained in (DataLoader(shuffle=True, generator)), so resumed runs replay it
    generator = torch.Generator().manual_seed(3)
    loader = DataLoader(range(size), generator=generator, batch_sampler=WithoutLoneLastBatch(
        RandomSampler(range(size), generator=generator), batch))
    before = DataLoader(range(size), batch_size=batch, shuffle=True, generator=torch.Generator().manual_seed(3))
    assert [b.tolist() for b in loader] == [b.tolist() for b in before][:len(loader)]


def test_only_a_batchnorm_with_a_one_by_one_input_needs_two_images():
    """torch refuses a training BatchNorm one value per channel: one image of a 1×1 map. resnet18's
    last stage is 1×1 at 32 px and 2×2 at 64 px; frozen statistics and a ViT have no such BatchNorm."""
    from engine.models import build_model
    from engine.training import batchnorm_needs_two_images

    for size, needs in ((32, True), (64, False)):
        model, _ = build_model("resnet18", "none", 3, 0, size)
        assert batchnorm_needs_two_images(model, size, frozen_batchnorm=False) == needs, size
        if needs:  # what it guards against, as torch says it
            with pytest.raises(ValueError, match="more than 1 value per channel"):
                model.train()(torch.zeros(1, 3, size, size))
        else:
            model.train()(torch.zeros(1, 3, size, size))
    assert not batchnorm_needs_two_images(build_model("resnet18", "none", 3, 0, 32)[0], 32, frozen_batchnorm=True)


def test_a_training_set_one_more_than_a_multiple_of_the_batch_trains_and_resumes(tmp_path, shapes_data, cli):
    images = sum(1 for p in (shapes_data / "train").rglob("*") if p.is_file())
    out = tmp_path / "run"
    result = run(cli, shapes_data, out, "--batch-size", str(images - 1))  # BatchNorm cannot train on one image
    assert result.exit_code == 0, result.output
    assert "left out" in result.output
    warned = [w for w in read_run(out).config["warnings"] if "last batch of one image" in w]
    assert len(warned) == 1 and f"{images} training images in batches of {images - 1}" in warned[0]
    assert cli("run", "--out", out, "--resume", "--epochs", "2").exit_code == 0
    assert epochs_recorded(out) == [0, 1, 2]


def test_a_probe_set_smaller_than_asked_is_a_recorded_warning(tmp_path, shapes_data, cli):
    held_out = sum(1 for p in (shapes_data / "val").rglob("*") if p.is_file())
    result = run(cli, shapes_data, tmp_path / "run", "--probe-size", "5000")
    assert result.exit_code == 0, result.output
    warned = [w for w in read_run(tmp_path / "run").config["warnings"] if w.startswith("--probe-size 5000")]
    assert warned == [f"--probe-size 5000 asks for more images than the held-out split has ({held_out}): the probe "
                      f"set is all {held_out} of them"]


def test_a_split_that_leaves_nothing_held_out_says_why(tmp_path, shapes_data, cli):
    data = tmp_path / "data"
    for folder in sorted((shapes_data / "train").iterdir()):
        (data / folder.name).mkdir(parents=True)
        shutil.copy(next(folder.iterdir()), data / folder.name)
    assert_clean_error(run(cli, data, tmp_path / "run"), "left no held-out images", "single image")


def test_a_class_folder_linked_to_another_is_refused(tmp_path, shapes_data, cli):
    data = tmp_path / "data"
    shutil.copytree(shapes_data, data)
    (data / "train" / "circle").symlink_to(data / "train" / "disc")
    assert_clean_error(run(cli, data, tmp_path / "run"), "are the same folder", "'circle' is a link")
    assert not (tmp_path / "run").exists()


def test_weights_that_are_a_folder_and_a_layer_named_twice(tmp_path, shapes_data, cli):
    assert_clean_error(run(cli, shapes_data, tmp_path / "run", "--weights", tmp_path), "is a folder",
                       "state-dict file inside it")
    assert_clean_error(run(cli, shapes_data, tmp_path / "run", "--layers", "layer1.1,layer2.1,layer1.1"),
                       "'layer1.1' more than once")
