"""UMAP of a layer's probe features (ANALYSES.md §8): fitted on the source, epochs placed on the same
map; the numbers beside it against straightforward references; the command, the TUI and the figure."""

import json
from collections import Counter

import numpy as np
import pytest
import torch

from engine.posthoc.feature_umap import map_shift, neighbour_agreement, probe_features, run_feature_umap
from engine.errors import FtdynError
from engine.run_inputs import model_state, open_run
from run_factory import CLASSES, write_fake_map, write_fake_run


def reference_agreement(points, labels, k, cosine=False):
    """Leave-one-out k-NN by sorting every other point: majority class, ties to the nearest tied."""
    x = [np.asarray(p, dtype=float) for p in points]
    if cosine:
        x = [p / np.linalg.norm(p) for p in x]
    hits = 0
    for i, p in enumerate(x):
        order = sorted((j for j in range(len(x)) if j != i), key=lambda j: float(np.sum((x[j] - p) ** 2)))[:k]
        votes = Counter(int(labels[j]) for j in order)
        best = max(votes.values())
        winner = next(int(labels[j]) for j in order if votes[int(labels[j])] == best)
        hits += winner == labels[i]
    return hits / len(x)


def test_neighbour_agreement_against_hand_values_and_a_reference():
    points = np.array([[0.0, 0.0], [0.0, 1.0], [10.0, 0.0], [10.0, 1.0], [6.0, 0.4]])
    labels = np.array([0, 0, 1, 1, 1])
    assert neighbour_agreement(points, labels, k=1) == 1.0
    # k = 3: points 0 and 1 each have the other (class 0), then 4 and one of the far pair (class 1):
    # outvoted; the three of class 1 keep theirs
    assert neighbour_agreement(points, labels, k=3) == pytest.approx(3 / 5)
    # a 1-1 tie goes to the nearer: point 4's two nearest are 2 and 3 (class 1) → hit even at k = 2
    assert neighbour_agreement(points, labels, k=2) == reference_agreement(points, labels, 2)
    rng = np.random.default_rng(0)
    for _ in range(5):
        cloud, classes = rng.normal(size=(30, 6)), rng.integers(0, 3, 30)
        for k in (1, 4, 5):
            assert neighbour_agreement(cloud, classes, k=k) == pytest.approx(reference_agreement(cloud, classes, k))
        assert neighbour_agreement(cloud, classes, "cosine") == pytest.approx(
            reference_agreement(cloud, classes, 5, cosine=True))
        assert neighbour_agreement(cloud * 7.0, classes, "cosine") == neighbour_agreement(cloud, classes, "cosine")


def test_map_shift_is_the_median_move_over_the_source_radius():
    source = np.array([[0.0, 0.0], [2.0, 0.0]])  # centroid (1, 0), RMS radius 1
    assert map_shift(source, source) == 0.0
    assert map_shift(source, source + [[3.0, 4.0], [0.0, 0.0]]) == pytest.approx(2.5)  # median of 5 and 0
    assert map_shift(source * 10, source * 10 + [[30.0, 40.0], [0.0, 0.0]]) == pytest.approx(2.5)  # scale-free


def test_umap_is_fitted_on_the_source_and_deterministic_for_a_seed(trained):
    full, _ = trained
    result, path = run_feature_umap(full, "layer1.1", seed=3)
    assert path == full / "analyses" / "umap-layer1.1.json"
    assert json.loads(path.read_text())["points"] == result["points"]
    assert result["epochs"] == [0, 1, 2] and result["display"] == "scatter" and result["classes"] == CLASSES
    assert all(len(result["points"][str(e)]) == len(result["labels"]) == 9 for e in result["epochs"])  # every image
    assert result["settings"]["neighbours"] == 8  # 15 by default, at most the probe size − 1
    again, _ = run_feature_umap(full, "layer1.1", seed=3)
    assert again["points"] == result["points"]  # the same seed, the same map
    other, _ = run_feature_umap(full, "layer1.1", seed=4, epochs=[2])
    assert other["epochs"] == [0, 2] and other["points"]["0"] != result["points"]["0"]
    assert result["stats"]["0"]["shift"] == 0.0 and result["shift_floor"] > 0.0  # UMAP's placement noise

    # the features: each probe image's spatial mean at layer1, taken here with a plain hook
    trainer = open_run(full)
    trainer.model.load_state_dict(model_state(full, 2, trainer.device))
    caught = []
    hook = trainer.model.layer1[1].register_forward_hook(lambda _m, _i, out: caught.append(out.double().mean((2, 3))))
    with torch.no_grad():
        trainer.model.eval()
        for images, _ in trainer.probe_loader:
            trainer.model(images)
    hook.remove()
    by_hand = torch.cat(caught).numpy()
    layout = next(layer.layout for layer in trainer.layers if layer.name == "layer1.1")
    found = probe_features(trainer.model, trainer.probe_loader, "layer1.1", layout, "pooled", trainer.device)
    np.testing.assert_allclose(found, by_hand, rtol=0, atol=1e-12)
    labels = np.array(result["labels"])
    assert labels.tolist() == [int(label) for _, label in trainer.probe]
    assert result["stats"]["2"]["neighbours_features"] == pytest.approx(reference_agreement(by_hand, labels, 5))
    assert result["stats"]["2"]["neighbours_map"] == pytest.approx(
        reference_agreement(np.array(result["points"]["2"]), labels, 5), abs=1e-12)


def test_umap_command_prints_csv_and_refuses_bad_input_in_one_line(trained, cli):
    full, _ = trained
    result = cli("umap", full, "--layer", "layer2.1", "--epochs", "2", "--format", "csv")
    assert result.exit_code == 0, result.output
    assert "# umap_points\nrun,layer,features,epoch,image,class,x,y" in result.output
    assert sum(line.startswith("full,layer2.1,pooled,2,") for line in result.output.splitlines()) == 9 + 1
    for args, says in ((("--layer", "nope"), "was not hooked in this run"),
                       (("--layer", "layer1.1", "--features", "cls"), "has no class token"),
                       (("--layer", "layer1.1", "--epochs", "7"), "no checkpoint for epoch 7"),
                       (("--layer", "layer1.1", "--metric", "manhattan"), "--metric takes euclidean or cosine"),
                       (("--layer", "layer1.1", "--neighbours", "500"), "use --neighbours 8 or fewer")):
        bad = cli("umap", full, *args)
        assert bad.exit_code != 0 and says in bad.output and "Traceback" not in bad.output, bad.output


# ---------------------------------------------------------------------------------------------
# Shown: the TUI's filter view and post-hoc results, and `ftdyn figures`


def test_map_points_leave_damaged_points_out(tmp_path):
    from ftdyn_tui.maps import map_epochs, map_limits, map_numbers, map_points, stepped

    result = write_fake_map(tmp_path)
    result["points"]["5"][0] = ["x", None]
    result["points"]["5"][1] = [float("nan"), 1.0]
    result["points"]["5"][2] = [1e308, -1e308]  # finite, but no map anyone fitted: left out
    result["points"].update({"²": [[0, 0]], "05": [[0, 0]], "7": "not a list"})
    assert map_epochs(result) == [0, 2, 5]
    by_class = map_points(result, 5)
    assert sorted(by_class) == sorted(CLASSES) and sum(len(xs) for xs, _ in by_class.values()) == 9
    (x_low, x_high), _ = map_limits(result)
    assert x_low < 0.0 and 2 * 6 < x_high < 100  # every epoch's points inside the shared axes
    result["labels"][3] = "\x1b[31mred"
    assert all("\x1b" not in name for name in map_points(result, 5))  # shown, never run
    for damaged in ({"points": 5}, {"points": {}}, {"stats": [1], "settings": {"k": "x"}, "points": {"0": []}}):
        assert map_epochs(damaged) in ([], [0]) and map_limits(damaged) == ((0.0, 1.0), (0.0, 1.0))
        assert map_numbers(damaged, 0) == "epoch 0: no numbers recorded"
    assert stepped([], 3, 1) is None and stepped([0, 2, 5], 9, -1) == 2 and stepped([0, 2, 5], 0, -1) == 0


async def test_filter_view_shows_the_layers_map_and_steps_through_epochs(tmp_path):
    from ftdyn_tui.app import create_app
    from ftdyn_tui.screens.filters import FilterScreen
    from ftdyn_tui.screens.results import ResultsScreen

    write_fake_run(tmp_path / "alpha")
    write_fake_map(tmp_path / "alpha")
    app = create_app([tmp_path / "alpha"], poll_seconds=60)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        await pilot.press("f")
        screen = app.screen
        assert isinstance(screen, FilterScreen) and not screen.query_one("#map").display
        await pilot.press("u")
        assert screen.map_shown and screen.query_one("#map").display and screen.map_epoch == 5
        caption = str(screen.query_one("#caption").render())
        assert "UMAP of block0" in caption and "epoch 5: move (source radii) 0.500" in caption and "features 0.750" in caption
        await pilot.press("left")
        assert screen.map_epoch == 2 and "epoch 2: move (source radii) 0.200" in str(screen.query_one("#caption").render())
        await pilot.press("left", "left")
        assert screen.map_epoch == 0
        screen.query_one("#layers").highlighted = 1  # a layer with no map: says how to make one
        await pilot.pause()
        assert "ftdyn umap RUN --layer block1" in str(screen.query_one("#caption").render())
        screen.query_one("#layers").highlighted = 0
        await pilot.pause()
        await pilot.press("u")
        assert not screen.map_shown and not screen.query_one("#map").display
        screen.query_one("#layers").highlighted = 2
        await pilot.pause()
        await pilot.press("u")  # no map of block2: a note, and the images stay
        assert not screen.map_shown and "ftdyn umap" in str(list(app._notifications)[-1].message)
        await pilot.press("escape", "t")
        await pilot.pause()
        results = app.screen
        assert isinstance(results, ResultsScreen) and results.query_one("#result-plot").display
        assert results.map_epoch == 5
        await pilot.press("left")
        assert results.map_epoch == 2 and "epoch 2: move (source radii) 0.200" in str(results.query_one("#result-text").render())


def test_figures_draw_a_map_per_umap_result(tmp_path):
    from PIL import Image

    from engine.figures import write_figures
    from engine.record import read_run

    write_fake_run(tmp_path / "alpha", vis=False)
    result = write_fake_map(tmp_path / "alpha")
    result["points"]["5"][0] = [float("inf"), 1.0]  # json writes Infinity, and reads it back
    result["classes"][0] = "$x^$_under"  # text, not mathtext
    (tmp_path / "alpha" / "analyses" / "umap-block0.json").write_text(json.dumps(result))
    written = write_figures([read_run(tmp_path / "alpha")], tmp_path / "figures", "png")
    maps = [path for path in written if path.name.startswith("umap-")]
    assert len(maps) == 1
    with Image.open(maps[0]) as picture:
        assert picture.width > picture.height > 100  # one row of panels


async def test_damaged_maps_are_named_not_fatal(tmp_path):
    from ftdyn_tui.app import create_app

    write_fake_run(tmp_path / "alpha")
    write_fake_map(tmp_path / "alpha")
    path = tmp_path / "alpha" / "analyses" / "umap-block0.json"
    damaged = json.loads(path.read_text())
    damaged["points"] = {"²": [[1, 2]], "0": [[1e308, -1e308]]}
    damaged["stats"] = [1, 2]
    path.write_text(json.dumps(damaged))
    app = create_app([tmp_path / "alpha"], poll_seconds=60)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.pause()
        await pilot.press("f", "u", "right", "left", "left")
        assert app.screen.map_shown and "epoch 0: no numbers recorded" in str(app.screen.query_one("#caption").render())
        await pilot.press("escape", "t", "right", "left")
        await pilot.pause()
        assert app.is_running
