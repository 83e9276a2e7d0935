"""Bad input: a one-line error that says what to do, never a traceback, never lost records."""

import pickle
import shutil

import pytest
import torch
import torchvision

from conftest import TINY_RUN
from engine.record import read_run


def assert_clean_error(result, *fragments):
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def run(cli, data, out, *extra):
    return cli("run", "--data", data, "--out", out, "--epochs", "1", *TINY_RUN, *extra)


def test_missing_data_folder(cli, tmp_path):
    assert_clean_error(run(cli, tmp_path / "nowhere", tmp_path / "run"), "does not exist", "--data")


def test_empty_data_folder(cli, tmp_path):
    (tmp_path / "empty").mkdir()
    assert_clean_error(run(cli, tmp_path / "empty", tmp_path / "run"), "no class sub-folders")


def test_folder_without_class_folders(cli, tmp_path, shapes_data):
    flat = tmp_path / "flat"
    flat.mkdir()
    for image in list((shapes_data / "train" / "disc").iterdir())[:3]:
        shutil.copy(image, flat)
    assert_clean_error(run(cli, flat, tmp_path / "run"), "no class sub-folders", "own folder")


def test_class_folders_without_images(cli, tmp_path):
    for name in ("a", "b"):
        (tmp_path / "data" / name).mkdir(parents=True)
    assert_clean_error(run(cli, tmp_path / "data", tmp_path / "run"), "no readable images")


def test_corrupt_and_non_image_files_are_skipped_and_counted(cli, tmp_path, shapes_data):
    data = tmp_path / "data"
    shutil.copytree(shapes_data, data)
    (data / "train" / "disc" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    (data / "train" / "square" / "notes.txt").write_text("not an image")
    good = next((data / "train" / "triangle").iterdir())
    (data / "train" / "triangle" / "truncated.png").write_bytes(good.read_bytes()[:60])
    result = run(cli, data, tmp_path / "run")
    assert result.exit_code == 0, result.output
    assert "skipped 3 unreadable files" in result.output
    snapshot = read_run(tmp_path / "run")
    assert snapshot.config["dataset"]["skipped_files"] == 3
    listed = (tmp_path / "run" / "skipped_files.txt").read_text().split()
    assert sorted(p.rsplit("/", 1)[1] for p in listed) == ["broken.png", "notes.txt", "truncated.png"]


@pytest.mark.parametrize("args,fragments", [
    (("--model", "resnet17"), ("unknown model 'resnet17'", "resnet18")),
    (("--weights", "IMAGENET9K"), ("not a weights name of resnet18", "IMAGENET1K_V1")),
    (("--layers", "layer9.1"), ("no layer 'layer9.1'", "ftdyn layers resnet18")),
    (("--layers", "layer1.0.relu"), ("runs 2 times", "enclosing block")),  # BasicBlock's shared ReLU
    (("--metrics", "cosine"), ("unknown metric",)),
    (("--view", "pixels"), ("unknown view",)),
    (("--metrics", "pwsm:0@filter"), ("alpha=0 is meaningless", "more probe images")),
    (("--device", "tpu"), ("unknown device",)),
    (("--autocast", "bf16", "--device", "cpu"), ("--autocast bf16 needs a CUDA device",)),
    (("--nproc-per-node", "2", "--batch-size", "9"), ("--batch-size 9 does not split evenly over 2 processes",
                                                     "multiple of 2")),
])
def test_unknown_names_and_degenerate_settings(cli, tmp_path, shapes_data, args, fragments):
    assert_clean_error(run(cli, shapes_data, tmp_path / "run", *args), *fragments)
    assert not (tmp_path / "run" / "records.jsonl").exists()  # refused before any work


def test_weights_file_for_another_architecture(cli, tmp_path, shapes_data):
    path = tmp_path / "vgg.pt"
    torch.save(torchvision.models.vgg11(weights=None).state_dict(), path)
    assert_clean_error(run(cli, shapes_data, tmp_path / "run", "--weights", path), "does not fit resnet18",
                       "another architecture")


def test_weights_file_with_another_class_count_is_used_with_a_new_head(cli, tmp_path, shapes_data):
    source = torchvision.models.resnet18(weights=None, num_classes=7)
    path = tmp_path / "r18-7.pt"
    torch.save({"state_dict": source.state_dict()}, path)
    result = run(cli, shapes_data, tmp_path / "run", "--weights", path)  # the last --weights wins
    assert result.exit_code == 0, result.output
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)
    assert state["model"]["fc.weight"].shape == (3, 512)
    # the backbone came from the file: one epoch at lr 1e-4 moves it far less than another init would differ
    moved = (state["model"]["conv1.weight"] - source.conv1.weight).abs().max()
    assert moved < 5e-3 < (torchvision.models.resnet18().conv1.weight - source.conv1.weight).abs().max()


def test_untrusted_pickle_is_not_unpickled(cli, tmp_path, shapes_data):
    path = tmp_path / "evil.pt"
    path.write_bytes(pickle.dumps({"x": object()}))
    assert_clean_error(run(cli, shapes_data, tmp_path / "run", "--weights", path), "cannot read weights file")


def test_missing_weights_file(cli, tmp_path, shapes_data):
    assert_clean_error(run(cli, shapes_data, tmp_path / "run", "--weights", tmp_path / "gone.pt"), "does not exist")


def test_existing_run_directory_needs_resume(cli, tmp_path, shapes_data):
    assert run(cli, shapes_data, tmp_path / "run").exit_code == 0
    before = (tmp_path / "run" / "records.jsonl").read_bytes()
    assert_clean_error(run(cli, shapes_data, tmp_path / "run"), "already holds a run", "--resume")
    assert (tmp_path / "run" / "records.jsonl").read_bytes() == before


def test_resume_with_nothing_to_resume(cli, tmp_path, shapes_data):
    assert_clean_error(run(cli, shapes_data, tmp_path / "run", "--resume"), "nothing to resume")


def test_resume_against_other_classes(cli, tmp_path, shapes_data):
    assert run(cli, shapes_data, tmp_path / "run").exit_code == 0
    other = tmp_path / "other"
    shutil.copytree(shapes_data, other)
    for split in ("train", "val"):
        (other / split / "disc").rename(other / split / "circle")
    assert_clean_error(cli("run", "--data", other, "--out", tmp_path / "run", "--resume", "--workers", "0"),
                       "same --data")


def test_nan_loss_stops_the_run_and_keeps_its_records(cli, tmp_path, shapes_data):
    result = run(cli, shapes_data, tmp_path / "run", "--optimizer", "sgd", "--lr", "1e30")
    assert_clean_error(result, "loss became", "--lr")
    snapshot = read_run(tmp_path / "run")
    assert snapshot.status["state"] == "failed" and "loss became" in snapshot.status["message"]
    assert [r["epoch"] for r in snapshot.epochs] == [0]


def test_cuda_out_of_memory_suggests_a_smaller_batch(cli, tmp_path, shapes_data, monkeypatch):
    from engine import training

    def out_of_memory(self, epoch):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(training.Trainer, "train_epoch", out_of_memory)
    result = run(cli, shapes_data, tmp_path / "run")
    assert_clean_error(result, "out of memory at batch size 8", "--batch-size 4")
    snapshot = read_run(tmp_path / "run")
    assert snapshot.status["state"] == "failed" and [r["epoch"] for r in snapshot.epochs] == [0]


def test_cuda_requested_without_a_gpu(cli, tmp_path, shapes_data):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    assert_clean_error(run(cli, shapes_data, tmp_path / "run", "--device", "cuda"), "no CUDA GPU")


def test_commands_other_than_run_refuse_to_run_under_torchrun(cli, monkeypatch, tmp_path):
    """Under torchrun every process would run the command and write the same files."""
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert_clean_error(cli("report", tmp_path), "only `ftdyn run` runs on several processes",
                       "`ftdyn report` without torchrun")
