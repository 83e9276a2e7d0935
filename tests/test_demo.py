"""`ftdyn demo`: generated domains, the cached source model, and the paper's findings (a)–(c)."""

import dataclasses
import json
from pathlib import Path

import pytest
from PIL import Image

from engine import demo as demo_module
import numpy as np

from engine.demo import (PRIMARY, SECOND, DemoSettings, cached_source, depth_trend, findings, intervals_short,
                         prepare_data, series_agreement, source_weights)
from engine.record import read_run
from engine.domains import DOMAINS, LAYOUTS, NEW_SHAPES, SHAPES, write_domain
from engine.errors import FtdynError

# A reduced configuration for the mechanics: every step of the demo runs and its findings are measured
# and said, not asserted — at this size they need not hold (80 probe images give layer4's 2×2 maps
# 320 rows for 512 channels, where PWSM's whitening compresses distances; the full demo has 576).
SMALL = DemoSettings(image_size=48, source_classes=6, source_per_class=40, source_epochs=2, target_classes=4,
                     target_per_class=40, target_val_fraction=0.5, epochs=2, probe_size=80, vis_k=1, workers=0)


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FTDYN_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_domains_are_deterministic_image_folders(tmp_path):
    for name in DOMAINS:
        a = write_domain(tmp_path / "a" / name, name, 3, 4, 32, seed=5)
        b = write_domain(tmp_path / "b" / name, name, 3, 4, 32, seed=5)
        files = sorted(p.relative_to(a) for p in a.rglob("*.png"))
        assert len(files) == 12 and {p.parts[0] for p in files} == {"train", "val"}
        assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)
    c = write_domain(tmp_path / "c", "source", 3, 4, 32, seed=6)
    assert (c / "train/disc/0001.png").read_bytes() != (tmp_path / "a/source/train/disc/0001.png").read_bytes()
    assert sorted(p.name for p in (tmp_path / "a/similar/train").iterdir()) == sorted(NEW_SHAPES[:3])
    assert not set(NEW_SHAPES) & set(SHAPES)  # the similar target's classes are new
    assert sorted(p.name for p in (tmp_path / "a/task/train").iterdir()) == sorted(LAYOUTS[:3])
    with pytest.raises(ValueError, match="classes"):
        write_domain(tmp_path / "d", "white", 9, 1, 32, seed=0)


def test_source_weights_are_cached_verified_and_rebuilt(cache):
    settings = dataclasses.replace(SMALL, image_size=32, source_per_class=24, source_epochs=1, target_per_class=4)
    data = prepare_data(settings, seed=0)
    events = []
    record = lambda kind, **info: events.append((kind, info))  # noqa: E731
    first = source_weights(settings, data, 0, "cpu", record)
    assert any("pretraining" in info.get("name", "") for kind, info in events)
    meta = json.loads(first.with_suffix(".json").read_text())
    assert meta["sha256"] and first.exists()

    events.clear()
    assert source_weights(settings, data, 0, "cpu", record) == first
    assert not any("pretraining" in info.get("name", "") for _, info in events)  # reused, not retrained

    first.write_bytes(first.read_bytes()[:-100] + b"x" * 100)  # corrupt the cached file
    events.clear()
    rebuilt = source_weights(settings, data, 0, "cpu", record)
    assert any(kind == "warning" and "corrupt" in info["text"] for kind, info in events)
    assert json.loads(rebuilt.with_suffix(".json").read_text())["sha256"] == demo_module.file_sha256(rebuilt)

    stale = dataclasses.replace(settings, source_epochs=2)  # other settings: another key, another file
    assert cached_source(stale, 0)[0] != first


def test_demo_refuses_a_directory_it_does_not_own(cache, tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(FtdynError, match="not a demo directory"):
        demo_module.run_demo(tmp_path / "mine", SMALL)
    assert (tmp_path / "mine" / "notes.txt").exists()


def test_demo_checks_the_papers_findings(cache, tmp_path, cli, monkeypatch):
    """The mechanics on a reduced configuration: what the findings say is measured, not asserted."""
    monkeypatch.setattr(demo_module, "DemoSettings", lambda **options: dataclasses.replace(SMALL, **options))
    result = cli("demo", "--out", tmp_path / "demo", "--no-tui", "--device", "cpu")
    assert result.exit_code == 0, result.output
    runs = [tmp_path / "demo" / name for name in ("similar", "task", "white")]
    found = findings(runs)
    assert set(found.trend.rho) == {"similar", "task", "white"} and found.trend.p_value is not None
    assert found.agreement.matched[2] > 0 and found.agreement.interval is not None  # Procrustes on filter-map recorded
    for letter in "abc":
        assert f"✓ ({letter})" in result.output or f"✗ ({letter})" in result.output
    saved = json.loads((tmp_path / "demo" / "findings.json").read_text())
    assert saved["agreement"]["measures"][1] == SECOND and saved["agreement"]["paper_r"] == [0.83, 0.43]
    # the layers whose intervals fall short are named with finding (a), as each run recorded them
    short = sorted({layer for run in runs for layer in intervals_short(read_run(run), PRIMARY)})
    assert saved["estimate"] == "bias-corrected" and sorted({x for xs in saved["intervals_short"].values() for x in xs}) == short
    if short:
        assert f"{', '.join(short)}: fewer than 10 samples a feature" in " ".join(result.output.split())
    # every figure of the demo is drawn and opens
    drawn = cli("figures", tmp_path / "demo", "--out", tmp_path / "figures", "--format", "png")
    assert drawn.exit_code == 0, drawn.output
    pictures = sorted((tmp_path / "figures").rglob("*.png"))
    names = {p.name.split("-")[0] for p in pictures}
    assert {"distance", "drift"} <= names and any("montages" in p.parts for p in pictures)
    for picture in pictures:
        with Image.open(picture) as image:
            image.verify()
    assert (tmp_path / "figures" / "table2.tex").read_text().count(r"\\") >= 3 * 4  # 3 runs × 4 measures
    # warm (one epoch is enough to show it): the demo replaces itself and reuses the cached source model
    again = cli("demo", "--out", tmp_path / "demo", "--no-tui", "--device", "cpu", "--epochs", "1")
    assert again.exit_code == 0 and "pretraining" not in again.output


LAYERS = ["stem", "layer1", "layer2", "layer3", "layer4"]


def test_depth_trend_is_a_test_that_can_fail():
    rising = {"a": np.array([.1, .2, .3, .5, .4]), "b": np.array([.1, .3, .2, .4, .6]), "c": np.arange(5.0)}
    trend = depth_trend(rising, dict.fromkeys(rising, LAYERS))
    assert trend.holds and trend.rho == pytest.approx({"a": 0.9, "b": 0.9, "c": 1.0})
    assert trend.breaks == {"a": ["layer4 < layer3"], "b": ["layer2 < layer1"], "c": []}
    deep_drop = depth_trend({"a": np.array([.1, .2, .3, .9, .15])}, {"a": LAYERS})
    assert deep_drop.breaks == {"a": ["layer4 < layer1, layer2, layer3"]}  # every shallower layer it falls below
    # exact null: P(mean ρ ≥ 0.933) over three independent random orders of five layers is small
    assert trend.p_value < 0.01
    flat = {k: np.random.default_rng(i).random(5) for i, k in enumerate("abc")}
    assert not depth_trend(flat, dict.fromkeys(flat, LAYERS)).holds
    falling = {k: v[::-1].copy() for k, v in rising.items()}
    assert not depth_trend(falling, dict.fromkeys(falling, LAYERS)).holds


def test_unrelated_rising_curves_do_not_pass_as_agreement():
    rng = np.random.default_rng(0)
    epochs = np.arange(1, 6)[:, None]

    def rising():  # every layer rises, each with its own shape and scale
        return epochs ** rng.uniform(0.2, 1.5, 5) * rng.uniform(0.5, 2, 5) + 0.05 * rng.normal(size=(5, 5))

    pwsm = [rising() for _ in range(3)]
    unrelated = series_agreement(pwsm, [rising() for _ in range(3)])
    assert unrelated.matched[0] > 0.8  # Pearson r alone would call these curves agreeing
    assert not unrelated.holds and unrelated.interval[0] <= 0 <= unrelated.interval[1]
    related = series_agreement(pwsm, [2 * p + 0.05 * rng.normal(size=p.shape) for p in pwsm])
    assert related.holds and related.difference > 0


def test_findings_are_decided_by_the_intervals_of_differences():
    """(a) with replicates: the deepest − shallowest paired difference decides, not the ordering alone;
    (c): matched − unrelated r is recomputed inside each replicate."""
    from scipy.stats import t as student_t

    t = float(student_t.ppf(0.95, 4))
    rng = np.random.default_rng(3)
    rising = {"a": np.array([.1, .2, .3, .4, .5]), "b": np.array([.1, .15, .3, .35, .6])}
    tight = {run: v + 0.001 * rng.normal(size=(5, 5)) for run, v in rising.items()}  # (G, layers)
    trend = depth_trend(rising, dict.fromkeys(rising, LAYERS), replicates=tight, t=t)
    assert trend.judged_by_intervals and trend.holds and all(r.low > 0 for r in trend.rise.values())
    # the same ordering, but the replicates say the deepest layer is within noise of the shallowest
    loose = {run: v + 0.5 * rng.normal(size=(5, 5)) for run, v in rising.items()}
    vague = depth_trend(rising, dict.fromkeys(rising, LAYERS), replicates=loose, t=t)
    assert vague.rho == trend.rho and not vague.holds
    assert vague.rise["a"].low < 0 < vague.rise["a"].high
    # a drop beyond noise is named with its interval
    dropping = {"a": np.array([.1, .2, .5, .3, .6])}
    drops = depth_trend(dropping, {"a": LAYERS}, replicates={"a": dropping["a"] + 0.001 * rng.normal(size=(5, 5))}, t=t)
    assert len(drops.drops["a"]) == 1 and drops.drops["a"][0].startswith("layer3 < layer2 (-0.200 [")

    epochs = np.arange(1, 6, dtype=float)[:, None]
    first = [epochs * np.linspace(0.5, 1.5, 4) + 0.01 * rng.normal(size=(5, 4)) for _ in range(2)]
    second = [2 * f for f in first]
    reps = lambda series, noise: [s + noise * rng.normal(size=(5, *s.shape)) for s in series]  # noqa: E731
    agreement = series_agreement(first, second, replicates=(reps(first, 1e-3), reps(second, 1e-3)), t=t)
    assert agreement.method.startswith("jackknife") and agreement.interval is not None
    lo, hi = agreement.interval
    assert lo < agreement.difference < hi
    by_hand = series_agreement(first, second)  # no replicates: the bootstrap over layers, as before
    assert by_hand.method == "bootstrap over layers" and by_hand.difference == agreement.difference
