"""`ftdyn demo`: the paper's experiment in miniature, offline, on a CPU in minutes.

1. Generate the four domains (engine.domains) — cached by content key.
2. Pretrain the source model on the source domain, once: cached as a state dict with its SHA-256;
   a corrupt or stale file is detected and rebuilt.
3. Fine-tune it on the three targets with `ftdyn run`'s own code path (the weights go in as a
   local state-dict file, the data as ImageFolder trees).
4. Check the paper's findings on the result, as tests that can fail, each decided by the interval
   of a difference (the runs' jackknife over probe-image groups, ANALYSES.md §6): shown only when
   that interval excludes zero.
   (a) distance to the source rises with depth: per run, the deepest minus the shallowest layer's
       distance (mean over epochs ≥ 1), a paired difference inside each replicate; the finding holds
       when every run's interval lies above 0. Adjacent layers whose drop is beyond noise are named;
       Spearman ρ against depth with its permutation p is reported as context.
   (b) the white-background target moves features more than the similar target (Table 2): the
       difference of the two runs' reusability means, unpaired (different probe sets: SEs combine);
   (c) PWSM on `positions` and Procrustes on `filter-map` — the paper's pairing — agree: Pearson r of
       their epoch series per layer, against the r of *unrelated* rising curves measured on the same
       runs (PWSM of one layer against Procrustes of another); the finding holds when matched −
       unrelated r, recomputed inside each replicate, has an interval above 0.
   Runs recorded without intervals fall back to the permutation test (a), the means (b) and a
   bootstrap over layers (c), and say so.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from engine.domains import GENERATOR_VERSION, write_domain
from engine.errors import FtdynError
from engine.record import read_run, write_json_atomic
from engine.intervals import Estimate, derived, estimate, unpaired_difference
from engine.report import (
    distance_matrix,
    interval_settings,
    layer_names,
    mean_std,
    pearson,
    replicate_matrix,
    reusability_estimate,
    reusability_table,
)
from engine.events import Event, quiet
from engine.run_config import RunConfig
from engine.training import run_training

TARGETS = ("similar", "task", "white")
PRIMARY = "pwsm:0.5@positions"
SECOND = "procrustes@filter-map"  # the paper's pairing for (c): Procrustes on each single map
PAPER_R = (0.83, 0.43)
TREND_LEVEL = 0.05  # (a): the permutation p-value at which distance is said to rise with depth
INTERVAL_LEVEL = 0.90  # (c): the bootstrap interval of matched − unrelated r
RESAMPLES = 20000


@dataclass(frozen=True)
class DemoSettings:
    model: str = "resnet18"
    image_size: int = 64
    source_classes: int = 8
    source_per_class: int = 350
    source_epochs: int = 12
    source_lr: float = 1e-3
    target_classes: int = 6
    target_per_class: int = 72
    # Held out per target: 24 images a class, 144 in all, all of them probe images — enough that the
    # deepest layer's positions view (2×2 maps of 512 channels at 64 px) has more rows (576) than
    # channels; with fewer, PWSM's whitening compresses that layer's distances towards 0.
    target_val_fraction: float = 1 / 3
    epochs: int = 5
    lr: float = 1e-4
    white_lr: float = 1e-3  # the paper fine-tuned Fruits-360 at 1e-3, the other targets at 1e-4
    batch_size: int = 32
    probe_size: int = 144
    vis_k: int = 4
    workers: int = 2

    def data_key(self, seed: int) -> str:
        fields = {k: getattr(self, k) for k in ("image_size", "source_classes", "source_per_class",
                                                 "target_classes", "target_per_class", "target_val_fraction")}
        return content_key({"data": fields, "seed": seed, "generator": GENERATOR_VERSION})

    def source_key(self, seed: int) -> str:
        fields = {k: getattr(self, k) for k in ("model", "image_size", "source_classes", "source_per_class",
                                                 "source_epochs", "source_lr", "batch_size")}
        return content_key({"source": fields, "seed": seed, "generator": GENERATOR_VERSION,
                            "torch": torch.__version__.split("+")[0]})


def content_key(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


def cache_dir() -> Path:
    """$FTDYN_CACHE, else $XDG_CACHE_HOME/ftdyn, else ~/.cache/ftdyn."""
    if os.environ.get("FTDYN_CACHE"):
        return Path(os.environ["FTDYN_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "ftdyn"


def prepare_data(settings: DemoSettings, seed: int, on_event: Event = quiet) -> dict[str, Path]:
    """The four domains under the cache, generated once per content key."""
    root = cache_dir() / f"data-{settings.data_key(seed)}"
    marker = root / "complete.json"
    paths = {name: root / name for name in ("source",) + TARGETS}
    if marker.exists():
        return paths
    if root.exists():
        shutil.rmtree(root)  # an interrupted generation: start it again
    plan = [("source", settings.source_classes, settings.source_per_class, 0.25)] + \
        [(name, settings.target_classes, settings.target_per_class, settings.target_val_fraction) for name in TARGETS]
    for name, classes, per_class, val_fraction in plan:
        on_event("generate", domain=name, done=0, total=classes * per_class)
        write_domain(paths[name], name, classes, per_class, settings.image_size, seed, val_fraction,
                     progress=lambda done, total, name=name: on_event("generate", domain=name, done=done, total=total))
    write_json_atomic(marker, {"settings": dataclasses.asdict(settings), "seed": seed})
    return paths


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def cached_source(settings: DemoSettings, seed: int) -> tuple[Path, Path]:
    key = settings.source_key(seed)
    return cache_dir() / f"source-{settings.model}-{key}.pt", cache_dir() / f"source-{settings.model}-{key}.json"


def valid_source(weights: Path, meta: Path) -> bool:
    """The cached model is the one recorded: same bytes (SHA-256) and a loadable state dict."""
    try:
        recorded = json.loads(meta.read_text())["sha256"]
        if recorded != file_sha256(weights):
            return False
        state = torch.load(weights, map_location="cpu", weights_only=True)
        return isinstance(state, dict) and all(isinstance(v, torch.Tensor) for v in state.values())
    except (OSError, ValueError, KeyError, RuntimeError, EOFError):
        return False
    except Exception:  # the unpickler refuses a corrupt file with several other types
        return False


def source_weights(settings: DemoSettings, data: dict[str, Path], seed: int, device: str,
                 on_event: Event = quiet) -> Path:
    """The pretrained source model's state dict, trained on the source domain the first time."""
    weights, meta = cached_source(settings, seed)
    if weights.exists() and meta.exists():
        if valid_source(weights, meta):
            on_event("phase", name=f"source model from the cache ({weights})")
            return weights
        on_event("warning", text=f"cached source model {weights.name} is corrupt or stale: rebuilding it")
    run_dir = weights.with_suffix(".run")
    if run_dir.exists():
        shutil.rmtree(run_dir)
    on_event("phase", name=f"pretraining the source model ({settings.model}, {settings.source_classes} classes, "
                          f"{settings.source_epochs} epochs) — once, then cached")
    config = RunConfig(model=settings.model, weights="none", data=str(data["source"]), out=str(run_dir),
                       epochs=settings.source_epochs, batch_size=settings.batch_size, lr=settings.source_lr,
                       image_size=settings.image_size, augment=True, probe_size=32, metrics=["cka"],
                       vis=False, device=device, workers=settings.workers, seed=seed)
    run_training(config, on_event=on_event)
    state = torch.load(run_dir / "checkpoints" / "last.pt", map_location="cpu", weights_only=True)["model"]
    accuracy = read_run(run_dir).epochs[-1]["held_out"]["accuracy"]
    tmp = weights.with_suffix(".pt.tmp")
    torch.save(state, tmp)
    tmp.replace(weights)
    write_json_atomic(meta, {"sha256": file_sha256(weights), "held_out_accuracy": accuracy,
                             "settings": dataclasses.asdict(settings), "seed": seed})
    shutil.rmtree(run_dir / "checkpoints")  # the record of the pretraining stays for inspection
    return weights


def prepare_out(out: Path) -> None:
    """The demo owns its directory: a previous demo there is replaced, anything else is refused."""
    if out.exists() and any(out.iterdir()):
        if not (out / "demo.json").exists():
            raise FtdynError(f"'{out}' exists and is not a demo directory; choose another --out")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)


def prepare_demo(out: Path, settings: DemoSettings, seed: int, device: str, on_event: Event,
                 **recorded: Any) -> tuple[dict[str, Path], Path]:
    """The demo's directory, generated domains and cached source model: (data folders, weights)."""
    prepare_out(out)
    data = prepare_data(settings, seed, on_event)
    weights = source_weights(settings, data, seed, device, on_event)
    write_json_atomic(out / "demo.json", {"settings": dataclasses.asdict(settings), "seed": seed, **recorded,
                                          "source_weights": str(weights)})
    return data, weights


def run_demo(out: Path, settings: DemoSettings, seed: int = 0, device: str = "auto",
             on_event: Event = quiet) -> list[Path]:
    out = Path(out)
    data, weights = prepare_demo(out, settings, seed, device, on_event)
    runs = []
    for target in TARGETS:
        on_event("phase", name=f"fine-tuning on the '{target}' target")
        config = RunConfig(model=settings.model, weights=str(weights), data=str(data[target]), out=str(out / target),
                           epochs=settings.epochs, batch_size=settings.batch_size,
                           lr=settings.white_lr if target == "white" else settings.lr,
                           image_size=settings.image_size, probe_size=settings.probe_size,
                           metrics=["pwsm", "procrustes", "cka", SECOND], vis=True, vis_k=settings.vis_k,
                           device=device, workers=settings.workers, seed=seed)
        runs.append(run_training(config, on_event=on_event))
    return runs


# ------------------------------------------------------------------------------------------------
# The paper's findings


@dataclass
class DepthTrend:
    """(a): per run, Spearman ρ of distance against depth, the layers that break the order, and — where
    the runs recorded intervals — the deepest minus the shallowest layer with its paired jackknife
    interval, which decides the finding."""

    rho: dict[str, float | None]
    breaks: dict[str, list[str]]  # run → "layer4 < layer2, layer3": each layer below shallower ones
    p_value: float | None  # P(mean ρ ≥ observed) when every run's layer order is random
    rise: dict[str, Estimate | None] = dataclasses.field(default_factory=dict)  # deepest − shallowest
    drops: dict[str, list[str]] = dataclasses.field(default_factory=dict)  # deeper layer below its neighbour, beyond noise

    @property
    def judged_by_intervals(self) -> bool:
        return bool(self.rise) and all(r is not None for r in self.rise.values())

    @property
    def holds(self) -> bool:
        if self.judged_by_intervals:
            return all(r.low > 0 for r in self.rise.values())
        return self.p_value is not None and self.p_value < TREND_LEVEL and all(
            r is not None and r > 0 for r in self.rho.values())


@dataclass
class Agreement:
    """(c): Pearson r of two measures' epoch series, matched layers against unrelated ones."""

    matched: tuple[float | None, float | None, int]  # mean r, std r, layers
    unrelated: float | None  # mean r of one measure's layer i against the other's layer j ≠ i
    difference: float | None
    interval: tuple[float, float] | None
    method: str = "bootstrap over layers"  # or the jackknife over probe-image groups

    @property
    def holds(self) -> bool:
        return self.interval is not None and self.interval[0] > 0


def spearman(x: np.ndarray, y: np.ndarray) -> float | None:
    from scipy.stats import rankdata

    return pearson(list(rankdata(x)), list(rankdata(y)))


def depth_trend(per_layer: dict[str, np.ndarray], layers: dict[str, list[str]], seed: int = 0,
                replicates: dict[str, np.ndarray] | None = None, t: float | None = None) -> DepthTrend:
    """``per_layer``: run → each layer's distance (mean over epochs ≥ 1), shallow to deep;
    ``replicates``: run → the same (G × layers) inside each jackknife replicate, with the interval's ``t``."""
    rho, breaks, usable, rise, drops = {}, {}, {}, {}, {}
    for run, values in per_layer.items():
        keep = ~np.isnan(values)
        names = [n for n, k in zip(layers[run], keep) if k]
        values = values[keep]
        rho[run] = spearman(np.arange(len(values)), values) if len(values) >= 3 else None
        breaks[run] = [f"{names[j]} < " + ", ".join(names[i] for i in range(j) if values[i] > values[j])
                       for j in range(1, len(values)) if values[j] < values[:j].max()]
        if rho[run] is not None:
            usable[run] = values
        if replicates is not None and t is not None and len(values) >= 2:
            reps = replicates[run][:, keep]
            rise[run] = derived(lambda v: float(v[-1] - v[0]), values, reps, t)
            steps = [(j, derived(lambda v, j=j: float(v[j] - v[j - 1]), values, reps, t)) for j in range(1, len(values))]
            drops[run] = [f"{names[j]} < {names[j - 1]} ({step.value:+.3f} [{step.low:+.3f}, {step.high:+.3f}])"
                          for j, step in steps if step is not None and step.high < 0]
    if not usable:
        return DepthTrend(rho, breaks, None, rise, drops)
    observed = np.mean([rho[r] for r in usable])
    rng = np.random.default_rng(seed)
    ranks = {run: np.argsort(np.argsort(v)).astype(np.float64) for run, v in usable.items()}
    null = np.zeros(RESAMPLES)
    for run, r in ranks.items():  # ρ of a random order: depth ranks against permuted distance ranks
        depth = np.arange(len(r), dtype=np.float64) - (len(r) - 1) / 2
        shuffled = rng.permuted(np.broadcast_to(r, (RESAMPLES, len(r))), axis=1) - (len(r) - 1) / 2
        null += shuffled @ depth / (depth @ depth)  # ranks 0…n−1 both sides: equal norms
    null /= len(ranks)
    return DepthTrend(rho, breaks, float((np.sum(null >= observed - 1e-12) + 1) / (RESAMPLES + 1)), rise, drops)


def agreement_units(first: list[np.ndarray], second: list[np.ndarray]) -> tuple[list[float], list[float]]:
    """Per layer measured every epoch by both (over all runs): the matched r, and the mean r of the
    first measure's other layers against this layer of the second."""
    matched, unrelated_by_unit = [], []
    for a, b in zip(first, second):
        complete = ~np.isnan(a).any(0) & ~np.isnan(b).any(0)
        for j in np.flatnonzero(complete):
            r = pearson(list(a[:, j]), list(b[:, j]))
            others = [pearson(list(a[:, i]), list(b[:, j])) for i in np.flatnonzero(complete) if i != j]
            others = [o for o in others if o is not None]
            if r is not None and others:
                matched.append(r)
                unrelated_by_unit.append(float(np.mean(others)))
    return matched, unrelated_by_unit


def series_agreement(first: list[np.ndarray], second: list[np.ndarray], seed: int = 0,
                     replicates: tuple[list[np.ndarray], list[np.ndarray]] | None = None,
                     t: float | None = None, plug_in: tuple[list[np.ndarray], list[np.ndarray]] | None = None,
                     corrected: bool = False) -> Agreement:
    """``first``/``second``: per run, (epochs ≥ 1 × layers) series of the two measures as shown. With
    ``replicates`` (per run, G × epochs × layers for each measure) and ``t``, the interval of
    matched − unrelated is the jackknife over probe-image groups, the difference recomputed inside
    each replicate (group g left out of every run at once) and on the ``plug_in`` series (the values on
    every probe image, which the replicates are of), bias-corrected with ``corrected`` — a difference of
    correlations is not linear in the values, so it is corrected as a statistic of its own; otherwise a
    bootstrap over layers."""
    matched, unrelated_by_unit = agreement_units(first, second)
    if not matched:
        return Agreement((None, None, 0), None, None, None)
    m, u = np.array(matched), np.array(unrelated_by_unit)
    mean, std = mean_std(matched)
    if replicates is not None and t is not None:
        groups = replicates[0][0].shape[0]

        def difference(g: int) -> float | None:
            mg, ug = agreement_units([r[g] for r in replicates[0]], [r[g] for r in replicates[1]])
            return float(np.mean(mg) - np.mean(ug)) if len(mg) == len(matched) else None

        whole_m, whole_u = agreement_units(*(plug_in or (first, second)))
        whole = float((np.array(whole_m) - np.array(whole_u)).mean()) if len(whole_m) == len(matched) else None
        found = estimate(whole, [difference(g) for g in range(groups)], t, corrected)
        interval = None if found is None else (found.low, found.high)
        return Agreement((mean, std, len(matched)), float(u.mean()),
                         found.value if found is not None else float((m - u).mean()), interval,
                         "jackknife over probe-image groups" + (", bias-corrected" if corrected else ""))
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(m), size=(RESAMPLES, len(m)))
    boot = (m[draws] - u[draws]).mean(1)
    tail = (1 - INTERVAL_LEVEL) / 2
    interval = (float(np.quantile(boot, tail)), float(np.quantile(boot, 1 - tail)))
    return Agreement((mean, std, len(matched)), float(u.mean()), float((m - u).mean()), interval)


@dataclass
class Findings:
    trend: DepthTrend  # (a), primary measure
    reusability: dict[str, tuple[float, float]]  # run → (mean, std), primary measure
    agreement: Agreement  # (c), PRIMARY vs SECOND
    white_minus_similar: Estimate | None = None  # (b): unpaired difference of the reusability means
    level: float | None = None  # the runs' interval level (None: no intervals recorded)
    estimate: str | None = None  # what values and intervals are of: "bias-corrected", or "plug-in" (older runs)
    short: dict[str, list[str]] | None = None  # run → layers of the primary measure whose intervals fall short

    @property
    def early_layers_closer(self) -> bool:
        return self.trend.holds

    @property
    def white_moves_more(self) -> bool:
        if self.white_minus_similar is not None:
            return self.white_minus_similar.low > 0
        return self.reusability["white"][0] > self.reusability["similar"][0]

    @property
    def metrics_agree(self) -> bool:
        return self.agreement.holds

    def lines(self) -> list[str]:
        mark = lambda ok: "✓" if ok else "✗"  # noqa: E731
        level = f"{self.level:.0%}" if self.level is not None else ""
        if self.estimate == "bias-corrected":
            level += " bias-corrected"
        t = self.trend
        rhos = ", ".join(f"{run} ρ {'—' if r is None else f'{r:+.2f}'}" for run, r in t.rho.items())
        broken = " | ".join(f"{run}: {'; '.join(b)}" for run, b in t.breaks.items() if b) or "none"
        p = "undefined" if t.p_value is None else f"{t.p_value:.3f}"
        if t.judged_by_intervals:
            rises = ", ".join(f"{run} {span(r)}" for run, r in t.rise.items())
            drops = " | ".join(f"{run}: {'; '.join(d)}" for run, d in t.drops.items() if d) or "none"
            a = (f"deepest − shallowest layer (paired, {level} jackknife interval; holds when every interval is "
                 f"above 0): {rises}; drops beyond noise: {drops}; context: {rhos}, permutation p = {p}")
        else:
            a = (f"{rhos}; permutation p = {p} (holds below {TREND_LEVEL} with every ρ > 0; no intervals recorded); "
                 f"layers that break the order: {broken}")
        short = sorted({layer for layers in (self.short or {}).values() for layer in layers})
        if short:  # said with the finding it bears on, not only among the warnings
            a += (f"; {', '.join(short)}: fewer than 10 samples a feature, where the intervals fall short of their "
                  f"level and even the corrected values are biased (docs/METRICS.md)")
        b = ", ".join(f"{run} {m:.3f} ± {s:.3f}" for run, (m, s) in self.reusability.items())
        if self.white_minus_similar is not None:
            b += (f"; white − similar {span(self.white_minus_similar)} ({level} interval, unpaired: the runs have "
                  f"different probe sets)")
        else:
            b += "; no intervals recorded: judged on the means alone"
        g = self.agreement
        if g.matched[0] is None:
            c = "undefined on every layer (a correlation over epochs needs at least two epochs ≥ 1)"
        elif g.interval is None:
            c = f"r {g.matched[0]:.2f} ± {g.matched[1]:.2f}; no interval (a replicate had an undefined r)"
        else:
            lo, hi = g.interval
            c_level = level if g.method.startswith("jackknife") else f"{INTERVAL_LEVEL:.0%}"
            c = (f"r {g.matched[0]:.2f} ± {g.matched[1]:.2f} over {g.matched[2]} layers (the paper: "
                 f"{PAPER_R[0]} ± {PAPER_R[1]}); unrelated rising curves (other layers) give r {g.unrelated:.2f}; "
                 f"matched − unrelated {g.difference:+.2f}, {c_level} interval [{lo:+.2f}, {hi:+.2f}] ({g.method})")
        return [
            f"{mark(t.holds)} (a) distance to the source rises with depth ({PRIMARY}, mean over epochs ≥ 1): {a}",
            f"{mark(self.white_moves_more)} (b) the white-background target moves features more than the similar "
            f"one (reusability distance, Table 2): {b}",
            f"{mark(g.holds)} (c) {PRIMARY.split('@')[0].upper().replace(':0.5', ' α=0.5')} on positions and "
            f"Procrustes on filter-map agree: {c}",
        ]

    def as_json(self) -> dict[str, Any]:
        g = self.agreement
        as_dict = lambda e: None if e is None else e.as_json()  # noqa: E731
        return {"depth_trend": {"spearman_rho": self.trend.rho, "breaks": self.trend.breaks,
                                "p_value": self.trend.p_value, "level": TREND_LEVEL,
                                "deepest_minus_shallowest": {run: as_dict(r) for run, r in self.trend.rise.items()},
                                "drops_beyond_noise": self.trend.drops},
                "reusability": self.reusability,
                "white_minus_similar": as_dict(self.white_minus_similar),
                "interval_level": self.level, "estimate": self.estimate, "intervals_short": self.short,
                "agreement": {"measures": [PRIMARY, SECOND], "mean_r": g.matched[0], "std_r": g.matched[1],
                              "layers": g.matched[2], "unrelated_r": g.unrelated, "difference": g.difference,
                              "interval": g.interval, "method": g.method,
                              "level": self.level if g.method.startswith("jackknife") else INTERVAL_LEVEL,
                              "paper_r": PAPER_R},
                "early_layers_closer": self.early_layers_closer, "white_moves_more": self.white_moves_more,
                "metrics_agree": self.metrics_agree}


def span(found: Estimate | None) -> str:
    """'+0.312 [+0.281, +0.343]', or 'undefined'."""
    return "undefined" if found is None else f"{found.value:+.3f} [{found.low:+.3f}, {found.high:+.3f}]"


def intervals_short(run, measure: str) -> list[str]:
    """The layers whose intervals of ``measure``'s view the run said fall short of their level (config.json
    ``intervals_short``, view → layers; absent in runs recorded before)."""
    recorded = (run.config or {}).get("intervals_short")
    found = recorded.get(measure.rpartition("@")[2]) if isinstance(recorded, dict) else None
    return [layer for layer in found if isinstance(layer, str)] if isinstance(found, list) else []


def findings(run_dirs: list[Path]) -> Findings:
    runs = {Path(p).name: read_run(p) for p in run_dirs}
    per_layer, names, first, second = {}, {}, [], []
    per_layer_reps, first_reps, second_reps, first_plug, second_plug = {}, [], [], [], []
    settings = [interval_settings(run) for run in runs.values()]
    common = settings[0] if settings and all(s is not None and s == settings[0] for s in settings) else None
    for name, run in runs.items():
        later = [i for i, r in enumerate(run.epochs) if r["epoch"] >= 1]
        epochs = [run.epochs[i] for i in later]
        layers = layer_names(run)
        names[name] = layers
        # shown values (bias-corrected where the run recorded them); the depth trend's rise and steps are
        # linear in them, so their jackknife intervals are centred right without a correction of their own
        per_layer[name] = np.nanmean(distance_matrix(epochs, layers, PRIMARY), axis=0)
        first.append(distance_matrix(epochs, layers, PRIMARY))
        second.append(distance_matrix(epochs, layers, SECOND))
        if common is not None:
            first_plug.append(distance_matrix(epochs, layers, PRIMARY, plug_in=True))
            second_plug.append(distance_matrix(epochs, layers, SECOND, plug_in=True))
            cube = replicate_matrix(epochs, layers, PRIMARY, common.groups)
            per_layer_reps[name] = np.nanmean(cube, axis=1)
            first_reps.append(cube)
            second_reps.append(replicate_matrix(epochs, layers, SECOND, common.groups))
    reuse = {row["run"]: (row["mean"], row["std"]) for row in reusability_table(list(runs.values()))
             if row["measure"] == PRIMARY}
    t = common.t if common is not None else None
    trend = depth_trend(per_layer, names, replicates=per_layer_reps if common else None, t=t)
    agreement = series_agreement(first, second, replicates=(first_reps, second_reps) if common else None, t=t,
                                 plug_in=(first_plug, second_plug), corrected=common is not None and common.corrected)
    white = similar = None
    for name, run in runs.items():
        if name in ("white", "similar") and common is not None:
            found = reusability_estimate(run, PRIMARY)
            white, similar = (found, similar) if name == "white" else (white, found)
    return Findings(trend, reuse, agreement, unpaired_difference(white, similar),
                    common.level if common is not None else None, common.estimate if common is not None else None,
                    {name: intervals_short(run, PRIMARY) for name, run in runs.items()})
