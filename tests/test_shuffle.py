"""Block shuffling (ANALYSES.md §4) and the transfer experiment built on it: the permutation's
properties, that every split and the pictures see it, the sweep grid with its barriers, the report
table and the `demo --transfer` mechanics (not its findings)."""

import dataclasses
import json

import numpy as np
import pytest
import torch

from conftest import TINY_RUN
from engine.data import image_transform
from engine.shuffle import PIXEL, BlockShuffle, Shuffle, parse_shuffle
from engine.record import read_run

# one worker runs this file: its module-scoped runs are recorded once (pytest-xdist, --dist loadgroup)
pytestmark = pytest.mark.xdist_group("shuffle")


def arange_image(size: int = 16) -> torch.Tensor:
    return torch.arange(3 * size * size, dtype=torch.float32).reshape(3, size, size)


@pytest.mark.parametrize("block", [1, 2, 4, 8, 16, PIXEL])
def test_shuffle_is_a_fixed_bijection(block):
    image = arange_image()
    shuffle = BlockShuffle(Shuffle(block, seed=3), 16)
    out = shuffle(image)
    assert sorted(out.flatten().tolist()) == image.flatten().tolist()  # a bijection on the values
    again = BlockShuffle(Shuffle(block, seed=3), 16)
    other = torch.randn(3, 16, 16)
    assert torch.equal(again(image), out) and torch.equal(again(other), shuffle(other))  # one π for every image
    if block == 16:
        assert torch.equal(out, image)  # B = image size is the identity
        return
    assert not torch.equal(BlockShuffle(Shuffle(block, seed=4), 16)(image), out)  # the seed draws π
    if block == PIXEL:
        moved_channel = (out // 256) != torch.arange(3)[:, None, None]
        assert moved_channel.any()  # all C·H·W values are permuted, across channels too
        return
    # every output block is one input block, whole, with its channels together
    blocks = {tuple(image[:, i:i + block, j:j + block].flatten().tolist())
              for i in range(0, 16, block) for j in range(0, 16, block)}
    seen = {tuple(out[:, i:i + block, j:j + block].flatten().tolist())
            for i in range(0, 16, block) for j in range(0, 16, block)}
    assert seen == blocks


def test_pictures_are_shuffled_like_the_network_input():
    shuffle = BlockShuffle(Shuffle(4, seed=0), 16)
    pixels = np.random.default_rng(0).integers(0, 255, size=(16, 16, 3), dtype=np.uint8)
    as_tensor = torch.from_numpy(pixels.transpose(2, 0, 1).copy())
    assert np.array_equal(shuffle.pixels(pixels), shuffle(as_tensor).permute(1, 2, 0).numpy())


def test_block_sizes_are_checked():
    assert parse_shuffle("none", 32) is None and parse_shuffle(None, 32) is None
    assert parse_shuffle("8", 32, seed=5) == Shuffle(8, 5)
    with pytest.raises(ValueError, match="block size 5 does not divide the image size 32; choose one of 1, 2, 4"):
        parse_shuffle("5", 32)
    with pytest.raises(ValueError, match="'pixel' or 'none'"):
        parse_shuffle("big", 32)


def test_a_bad_block_size_is_refused_in_one_line_before_anything_is_written(tmp_path, shapes_data, cli):
    result = cli("run", "--data", shapes_data, "--out", tmp_path / "run", "--epochs", "1", *TINY_RUN,
                 "--shuffle-blocks", "5")
    assert result.exit_code != 0
    assert "block size 5 does not divide the image size 32" in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_every_split_and_the_pictures_see_one_recorded_shuffle(tmp_path, shapes_data):
    from engine.run_config import RunConfig
    from engine.training import Trainer

    config = RunConfig(model="resnet18", data=str(shapes_data), out=str(tmp_path / "run"), weights="none",
                       image_size=32, batch_size=8, probe_size=9, workers=0, vis=True, vis_k=1,
                       shuffle_blocks="8", shuffle_seed=2)
    trainer = Trainer(config)
    trainer.prepare()
    assert trainer.config.to_json()["shuffle_blocks"] == "8" and trainer.config.to_json()["shuffle_seed"] == 2
    shuffle = BlockShuffle(Shuffle(8, 2), 32)
    plain = image_transform(32, augment=False)
    for dataset in (trainer.held_out, trainer.probe.dataset):
        path, _ = dataset.samples[0]
        from PIL import Image

        with Image.open(path) as image:
            expected = shuffle(plain(image.convert("RGB")))
        assert torch.equal(dataset[0][0], expected)
    assert any(isinstance(t, BlockShuffle) for t in trainer.train_set.transform.transforms)
    from engine.data import ImageList, pixel_transform

    first = trainer.held_out.samples[trainer.probe.indices[0]]
    shown = np.asarray(ImageList([first], pixel_transform(32))[0][0])
    assert np.array_equal(trainer.monitor.visualiser.images[0], shuffle.pixels(shown))


COMMON = ["--models", "resnet18", "--epochs", "1", "--image-size", "32", "--batch-size", "8", "--probe-size", "9",
          "--workers", "0", "--no-vis", "--lr", "1e-3"]


@pytest.fixture(scope="module")
def transfer_grid(tmp_path_factory, shapes_data):
    """block {16, none} × {a local checkpoint playing the pretrained model, none}: four runs."""
    from typer.testing import CliRunner

    from engine.models import architecture
    from ftdyn_tui.cli import app

    root = tmp_path_factory.mktemp("transfer")
    weights = root / "pretrained.pt"
    torch.manual_seed(0)
    torch.save(architecture("resnet18").state_dict(), weights)
    result = CliRunner().invoke(app, ["sweep", "--out", str(root / "grid"), "--data", str(shapes_data), *COMMON,
                                      "--shuffle-blocks", "16,none", "--weights", f"{weights},none"])
    assert result.exit_code == 0, result.output
    return root / "grid"


def test_transfer_sweep_grid_and_report(transfer_grid, cli):
    grid = transfer_grid
    names = sorted(p.name for p in grid.iterdir())
    assert names == ["resnet18-shapes-full-b16-pt", "resnet18-shapes-full-b16-rit",
                     "resnet18-shapes-full-bnone-pt", "resnet18-shapes-full-bnone-rit"]
    assert read_run(grid / names[0]).config["run"]["shuffle_blocks"] == "16"
    assert read_run(grid / names[2]).config["run"]["shuffle_blocks"] is None
    from engine.report import transfer_table

    rows = transfer_table([read_run(p) for p in grid.iterdir()])
    assert [r["block"] for r in rows] == ["none", "16"]
    for row in rows:
        assert row["pt_runs"] == 1 and row["rit_runs"] == 1
        assert 0 <= row["pt_final_accuracy"] <= 1 and 0 <= row["rit_final_accuracy"] <= 1
        assert row["target_accuracy"] == pytest.approx(0.9 * max(row["pt_final_accuracy"], row["rit_final_accuracy"]))
    report = cli("report", grid)
    assert report.exit_code == 0 and "Transfer · block shuffle" in report.output


async def test_the_app_plots_accuracy_against_block_size(transfer_grid):
    from ftdyn_tui.app import create_app
    from ftdyn_tui.screens.results import ResultsScreen

    app = create_app([transfer_grid], poll_seconds=60)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("t")
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, ResultsScreen)
        curve = next(r for r in screen.results if r["name"] == "transfer")
        assert curve["x"] == [16, 32] and set(curve["series"]) == {"P-T", "RI-T"}
        assert all(0 <= v <= 1 for values in curve["series"].values() for v in values)


def test_seed_pairs_get_their_barrier_once(tmp_path, shapes_data, cli):
    seeds = tmp_path / "seeds"
    args = ("sweep", "--out", seeds, "--data", shapes_data, *COMMON, "--weights", "none", "--seeds", "0,1")
    result = cli(*args)
    assert result.exit_code == 0, result.output
    assert "barrier resnet18-shapes-full-s0 ↔ resnet18-shapes-full-s1" in result.output
    assert list((seeds / "resnet18-shapes-full-s0" / "analyses").glob("barrier-*.json"))
    again = cli(*args)
    assert "already finished" in again.output and "already computed" in again.output
    from engine.report import transfer_table

    assert transfer_table([read_run(p) for p in seeds.iterdir()]) == []  # nothing varies but the seed


def test_bad_seeds_and_blocks_in_a_sweep_are_one_line(tmp_path, shapes_data, cli):
    base = ["sweep", "--out", tmp_path / "grid", "--data", shapes_data, "--models", "resnet18", "--image-size", "32"]
    result = cli(*base, "--shuffle-blocks", "3,none")
    assert result.exit_code != 0 and "block size 3 does not divide" in result.output
    result = cli(*base, "--seeds", "0,x")
    assert result.exit_code != 0 and "--seeds takes whole numbers" in result.output
    assert not (tmp_path / "grid").exists()


def test_transfer_demo_mechanics(tmp_path, monkeypatch, cli):
    """A reduced configuration: every cell runs, both barriers are computed, the findings are stated
    (✓, ✗ or ? — what they say is measured, not asserted)."""
    from engine import demo as demo_module
    from engine import transfer_demo

    monkeypatch.setenv("FTDYN_CACHE", str(tmp_path / "cache"))
    small = demo_module.DemoSettings(image_size=32, source_classes=3, source_per_class=12, source_epochs=1,
                                     target_classes=3, target_per_class=12, target_val_fraction=0.5, probe_size=9,
                                     workers=0)
    monkeypatch.setattr(demo_module, "DemoSettings", lambda **options: dataclasses.replace(small, **options))
    monkeypatch.setattr(transfer_demo, "BLOCKS", (None, "8"))
    monkeypatch.setattr(transfer_demo, "EPOCHS", 1)
    result = cli("demo", "--transfer", "--out", tmp_path / "demo", "--device", "cpu", "--image-size", "32")
    assert result.exit_code == 0, result.output
    found = json.loads((tmp_path / "demo" / "findings.json").read_text())
    assert [r["block"] for r in found["rows"]] == ["none", "8"]
    assert set(found["seed_barriers"]) == {"P-T", "RI-T"}
    assert all(None not in b.values() for b in found["seed_barriers"].values())
    assert None not in found["mean_accuracy_drop"].values()
    for mark in ("(i)", "(ii)"):
        assert any(f"{m} {mark}" in result.output for m in "✓✗")
