"""Shared invariance (ANALYSES.md §5): inversions reproduce a layer, STIR of a model with itself on its
own inversions is 1, its CKA is cka_distance's complement over every probe image, inversions are cached
and recomputed when what they depend on changes, and bad input is one line."""

import json

import numpy as np
import pytest
import torch
from torch import nn

from engine.analyses.invariance import CACHE_DIR, InversionSettings, centred_gram, gram_cka, invert, layer_outputs
from engine.posthoc.invariance import run_invariance
from engine.errors import FtdynError
from engine.similarity import cka_distance
from engine.run_inputs import model_state, open_run


def tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 4, 3, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(16, 3)).eval()


def test_gram_cka_is_the_complement_of_cka_distance():
    rng = np.random.default_rng(0)
    for n, p, q in ((12, 40, 7), (30, 5, 9), (9, 9, 300)):  # fewer rows than columns and more
        a, b = rng.normal(size=(n, p)), rng.normal(size=(n, q))
        b[:, :2] += 3 * a[:, :2]  # related, so the value is not near 0
        found = gram_cka(centred_gram(torch.tensor(a)), centred_gram(torch.tensor(b)))
        assert found == pytest.approx(1.0 - float(cka_distance(a, b)), abs=1e-10)
    # summed over column chunks and centred as a Gram: the same as centring the features first, also for
    # features far from 0 (post-ReLU maps are) and with chunks that do not divide the width
    import engine.analyses.invariance as invariance

    wide = torch.tensor(rng.normal(size=(12, 101)) + 50.0)
    direct = (wide - wide.mean(0)) @ (wide - wide.mean(0)).T
    original = invariance.GRAM_CHUNK_BYTES
    try:
        invariance.GRAM_CHUNK_BYTES = 8 * 12 * 7  # 7 columns at a time
        np.testing.assert_allclose(centred_gram(wide).numpy(), direct.numpy(), rtol=1e-9, atol=1e-8)
    finally:
        invariance.GRAM_CHUNK_BYTES = original
    same = centred_gram(torch.tensor(rng.normal(size=(10, 4))))
    assert gram_cka(same, same) == pytest.approx(1.0, abs=1e-12)
    assert gram_cka(same, torch.zeros_like(same)) is None  # a constant side: undefined, not 0


def test_inversion_reproduces_a_layer_and_stir_of_a_model_with_itself_is_one():
    model = tiny_model()
    targets = torch.rand(6, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    settings = InversionSettings(steps=300, step_size=0.05)
    noise = torch.rand(6, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    for layer, bound in (("0", 0.02), ("2", 0.2)):  # the first convolution; after a ReLU and a second one
        images, errors = invert(model, layer, targets, settings, torch.Generator().manual_seed(0))
        assert images.min() >= 0.0 and images.max() <= 1.0  # pixel space
        assert float(errors.max()) < bound, layer  # the stated bounds, 300 steps of η = 0.05
        # the recorded error is the error of the returned image (the best iterate), recomputed here
        with torch.no_grad():
            goal, found, start = (layer_outputs(model, x, [layer])[layer] for x in (targets, images, noise))
        np.testing.assert_allclose(((found - goal).norm(dim=1) / goal.norm(dim=1)).numpy(), errors.numpy(),
                                   rtol=1e-5)
        start_error = (start - goal).norm(dim=1) / goal.norm(dim=1)
        assert float(errors.max()) < 0.3 * float(start_error.min()), layer  # far below where noise is
        if layer == "0":  # X′ reproduces X: STIR(m | m) on m's own inversions is 1
            assert gram_cka(centred_gram(goal), centred_gram(found)) > 0.999
    with pytest.raises(FloatingPointError):
        broken = nn.Sequential(model, nn.Identity())
        broken[1].register_forward_hook(lambda _m, _i, out: out * float("nan"))
        invert(broken, "1", targets, InversionSettings(steps=3), torch.Generator().manual_seed(0))


def test_invariance_is_cached_uses_every_probe_image_and_matches_a_plain_reference(trained):
    full, _ = trained
    settings = InversionSettings(steps=4)
    summary, files = run_invariance(full, ["relu", "layer4.1"], [2], settings)
    assert [f.name for f in files] == ["invariance-e2.json", "invariance-diagonal.json"]
    result = json.loads(files[0].read_text())
    assert result["settings"]["probe_images"] == 9 and result["rows"] == ["relu", "layer4.1"]
    assert summary["x"] == [2] and set(summary["series"]) == {"relu", "layer4.1"}
    assert all(summary["inversion_seconds"][layer] > 0 for layer in ("relu", "layer4.1"))

    # STIR(epoch 2, layer j | source, layer i) by hand: the cached X′ᵢ and X through the tuned model,
    # flattened, over all 9 images, 1 − cka_distance
    trainer = open_run(full)
    trainer.model.load_state_dict(model_state(full, 2, trainer.device))
    trainer.model.eval()
    [cache_file] = (full / CACHE_DIR).glob("inversions-relu-*.pt")  # the key in its name
    cached = torch.load(cache_file, weights_only=True)
    assert cached["images"].shape[0] == 9
    from engine.data import IMAGENET_MEAN, IMAGENET_STD

    mean, std = torch.tensor(IMAGENET_MEAN).view(3, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1)
    clean = torch.stack([trainer.probe[i][0] for i in range(9)])  # normalised, as the run feeds them
    moved = (cached["images"] - mean) / std
    caught = {}
    hook = trainer.model.layer4[1].register_forward_hook(lambda _m, _i, out: caught.setdefault("out", []).append(out))
    with torch.no_grad():
        trainer.model(clean)
        trainer.model(moved)
    hook.remove()
    reference = 1.0 - float(cka_distance(caught["out"][0].flatten(1).double(), caught["out"][1].flatten(1).double()))
    assert result["values"][0][1] == pytest.approx(reference, abs=1e-6)
    assert all(0.0 <= v <= 1.0 + 1e-12 for row in result["values"] for v in row)

    # cached: the same settings reuse the inversions; other settings or a changed file recompute them
    again, _ = run_invariance(full, ["relu"], [2], settings)
    assert again["inversion_seconds"]["relu"] is None and any("reused" in n for n in again["notes"])
    other, _ = run_invariance(full, ["relu"], [2], InversionSettings(steps=5))
    assert other["inversion_seconds"]["relu"] > 0
    newest = max((full / CACHE_DIR).glob("inversions-relu-*.pt"), key=lambda path: path.stat().st_mtime_ns)
    stored = torch.load(newest, weights_only=True)
    torch.save(dict(stored, key="another source"), newest)
    recomputed, _ = run_invariance(full, ["relu"], [2], InversionSettings(steps=5))
    assert recomputed["inversion_seconds"]["relu"] > 0
    # a link planted at the cache's name is replaced, never written through
    outside = full.parent / "precious.txt"
    outside.write_text("keep me")
    newest.unlink()
    newest.symlink_to(outside)
    run_invariance(full, ["relu"], [2], InversionSettings(steps=5))
    assert outside.read_text() == "keep me" and newest.is_file() and not newest.is_symlink()


def test_invariance_command_prints_and_refuses_bad_input_in_one_line(trained, cli):
    full, _ = trained
    result = cli("invariance", full, "--layers", "relu", "--epochs", "1", "--steps", "2", "--both-directions")
    assert result.exit_code == 0, result.output
    assert "STIR(tuned layer j | source layer i)" in result.output and "each layer with itself" in result.output
    written = json.loads((full / "analyses" / "invariance-e1.json").read_text())
    assert written["reverse"] is not None and written["settings"]["both_directions"]
    report = cli("report", full, "--format", "csv")
    assert "stir_tuned_given_source" in report.output
    for args, says in ((("--layers", "nope"), "was not hooked in this run"),
                       (("--epochs", "7"), "no checkpoint for epoch 7"),
                       (("--step-size", "0"), "a step size > 0")):
        bad = cli("invariance", full, *args)
        assert bad.exit_code != 0 and says in bad.output and "Traceback" not in bad.output, bad.output
    with pytest.raises(FtdynError, match="inversions need steps ≥ 1"):
        InversionSettings(steps=0).check()
    from engine.analyses.invariance import refuse_channel_mixing

    refuse_channel_mixing("8")  # block shuffles keep each value in its channel
    with pytest.raises(FtdynError, match="--shuffle-blocks pixel"):
        refuse_channel_mixing("pixel")


def test_live_invariance_part_matches_the_command_and_resume_reuses_its_inversions(tmp_path, shapes_data, cli):
    from conftest import TINY_RUN
    from engine.record import read_run

    run_dir = tmp_path / "live"
    args = ["run", "--data", shapes_data, "--out", run_dir, *TINY_RUN, "--analyses", "distance,invariance",
            "--invariance-steps", "3", "--invariance-step-size", "0.25", "--layers", "relu,layer4.1"]
    first = cli(*args, "--epochs", "1")
    assert first.exit_code == 0, first.output
    cache = {path.name: path.stat().st_mtime_ns for path in (run_dir / CACHE_DIR).iterdir()}
    assert [name.rsplit("-", 1)[0] for name in sorted(cache)] == ["inversions-layer4.1", "inversions-relu"]
    resumed = cli("run", "--out", run_dir, "--resume", "--epochs", "2")
    assert resumed.exit_code == 0, resumed.output
    assert {path.name: path.stat().st_mtime_ns for path in (run_dir / CACHE_DIR).iterdir()} == cache  # reused
    run = read_run(run_dir)
    live = {r["epoch"]: r["invariance"]["layers"]["stir"] for r in run.epochs}
    assert sorted(live) == [0, 1, 2] and all(0.0 <= v <= 1.0 for values in live.values() for v in values.values())
    part = next(p for p in run.config["analyses"] if p["name"] == "invariance")
    assert part["measures"] == ["stir@layers"] and "3 inversion steps of η = 0.25" in part["note"]
    # the command, on the same inversions (same settings: reused), gives the same diagonal
    summary, _ = run_invariance(run_dir, ["relu", "layer4.1"], [2], InversionSettings(steps=3, step_size=0.25))
    assert summary["inversion_seconds"] == {"relu": None, "layer4.1": None}
    for layer in ("relu", "layer4.1"):
        assert summary["series"][layer][0] == pytest.approx(live[2][layer], abs=1e-9)


def test_vit_blocks_are_inverted_over_all_tokens_and_a_cut_gradient_is_refused():
    from engine.models import build_model

    torch.manual_seed(0)
    model = build_model("vit_b_32", "none", 3, 0, 64)[0].eval()
    layer = "encoder.layers.encoder_layer_0"
    targets = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    images, errors = invert(model, layer, targets, InversionSettings(steps=4), torch.Generator().manual_seed(0))
    start = torch.randn(targets.shape, generator=torch.Generator().manual_seed(0)).clamp(0.0, 1.0)
    with torch.no_grad():
        goal = layer_outputs(model, targets, [layer])[layer]
        start_error = (layer_outputs(model, start, [layer])[layer] - goal).norm(dim=1) / goal.norm(dim=1)
    assert goal.shape == (3, (1 + 4) * 768)  # the class token and the 2 × 2 patches, flattened
    assert (errors <= start_error + 1e-6).all()  # the start is a candidate: the best is never worse

    class Cut(nn.Module):
        def forward(self, x):
            return x.detach()

    cut = nn.Sequential(tiny_model()[:2], Cut())
    with pytest.raises(FtdynError, match="cannot be inverted"):
        invert(cut, "1", targets[:, :, :8, :8], InversionSettings(steps=2), torch.Generator().manual_seed(0))


async def test_the_app_draws_the_live_invariance_curves(tmp_path):
    from ftdyn_tui.app import create_app
    from run_factory import write_fake_run

    write_fake_run(tmp_path / "alpha", epochs=3, layers=2)
    config = json.loads((tmp_path / "alpha" / "config.json").read_text())
    config["analyses"] = [{"name": "invariance", "when": "epoch", "section": "invariance", "display": "series",
                           "title": "shared invariance with the source", "unit": "STIR", "measures": ["stir@layers"],
                           "rows": {"layers": ["block0", "block1"]}}]
    (tmp_path / "alpha" / "config.json").write_text(json.dumps(config))
    lines = (tmp_path / "alpha" / "records.jsonl").read_text().splitlines()
    records = [dict(json.loads(line), invariance={"layers": {"stir": {"block0": 1 - 0.1 * i, "block1": 1 - 0.2 * i}}})
               for i, line in enumerate(lines)]
    (tmp_path / "alpha" / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    app = create_app([tmp_path / "alpha"], poll_seconds=60)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        await pilot.press("enter")
        screen = app.screen
        assert screen.part == "invariance" and screen.measure == "stir@layers"  # the only part recorded
        await pilot.press("h")
        assert screen.query_one("#heatmap").display and app.is_running
