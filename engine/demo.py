"""`ftdyn demo`: the paper's experiment in miniature, offline, on a CPU in minutes.

1. Generate the four domains (engine.domains) — cached by content key.
2. Pretrain the source model on the source domain, once: cached as a state dict with its SHA-256;
   a corrupt or stale file is detected and rebuilt.
3. Fine-tune it on the three targets with `ftdyn run`'s own code path (the weights go in as a
   local state-dict file, the data as ImageFolder trees).
4. Check the paper's findings on the result, as tests that can fail:
   (a) distance to the source rises with depth: Spearman ρ between a layer's depth and its distance
       (mean over epochs ≥ 1) per run, mean ρ over runs against a permutation null (each run's layer
       order shuffled independently), and every layer that breaks the order named;
   (b) the white-background target moves features more than the similar target (Table 2);
   (c) PWSM on `positions` and Procrustes on `filter-map` — the paper's pairing — agree: Pearson r of
       their epoch series per layer, against the r of *unrelated* rising curves measured on the same
       runs (PWSM of one layer against Procrustes of another); the finding holds when the matched r
       exceeds the unrelated r with a bootstrap interval (over layers) that excludes 0.
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
from engine.report import distance_matrix, layer_names, mean_std, pearson, reusability_table
from engine.training import Event, RunConfig, quiet, run_training

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


def source_model(settings: DemoSettings, data: dict[str, Path], seed: int, device: str,
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
    weights = source_model(settings, data, seed, device, on_event)
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
    """(a): per run, Spearman ρ of distance against depth, and the layers that break the order."""

    rho: dict[str, float | None]
    breaks: dict[str, list[str]]  # run → "layer4 < layer2, layer3": each layer below shallower ones
    p_value: float | None  # P(mean ρ ≥ observed) when every run's layer order is random

    @property
    def holds(self) -> bool:
        return self.p_value is not None and self.p_value < TREND_LEVEL and all(
            r is not None and r > 0 for r in self.rho.values())


@dataclass
class Agreement:
    """(c): Pearson r of two measures' epoch series, matched layers against unrelated ones."""

    matched: tuple[float | None, float | None, int]  # mean r, std r, layers
    unrelated: float | None  # mean r of one measure's layer i against the other's layer j ≠ i
    difference: float | None
    interval: tuple[float, float] | None

    @property
    def holds(self) -> bool:
        return self.interval is not None and self.interval[0] > 0


def spearman(x: np.ndarray, y: np.ndarray) -> float | None:
    from scipy.stats import rankdata

    return pearson(list(rankdata(x)), list(rankdata(y)))


def depth_trend(per_layer: dict[str, np.ndarray], layers: dict[str, list[str]], seed: int = 0) -> DepthTrend:
    """``per_layer``: run → each layer's distance (mean over epochs ≥ 1), shallow to deep."""
    rho, breaks, usable = {}, {}, {}
    for run, values in per_layer.items():
        keep = ~np.isnan(values)
        names = [n for n, k in zip(layers[run], keep) if k]
        values = values[keep]
        rho[run] = spearman(np.arange(len(values)), values) if len(values) >= 3 else None
        breaks[run] = [f"{names[j]} < " + ", ".join(names[i] for i in range(j) if values[i] > values[j])
                       for j in range(1, len(values)) if values[j] < values[:j].max()]
        if rho[run] is not None:
            usable[run] = values
    if not usable:
        return DepthTrend(rho, breaks, None)
    observed = np.mean([rho[r] for r in usable])
    rng = np.random.default_rng(seed)
    ranks = {run: np.argsort(np.argsort(v)).astype(np.float64) for run, v in usable.items()}
    null = np.zeros(RESAMPLES)
    for run, r in ranks.items():  # ρ of a random order: depth ranks against permuted distance ranks
        depth = np.arange(len(r), dtype=np.float64) - (len(r) - 1) / 2
        shuffled = rng.permuted(np.broadcast_to(r, (RESAMPLES, len(r))), axis=1) - (len(r) - 1) / 2
        null += shuffled @ depth / (depth @ depth)  # ranks 0…n−1 both sides: equal norms
    null /= len(ranks)
    return DepthTrend(rho, breaks, float((np.sum(null >= observed - 1e-12) + 1) / (RESAMPLES + 1)))


def series_agreement(first: list[np.ndarray], second: list[np.ndarray], seed: int = 0) -> Agreement:
    """``first``/``second``: per run, (epochs ≥ 1 × layers) series of the two measures."""
    matched, unrelated_by_unit = [], []
    for a, b in zip(first, second):
        complete = ~np.isnan(a).any(0) & ~np.isnan(b).any(0)  # layers measured every epoch by both
        for j in np.flatnonzero(complete):
            r = pearson(list(a[:, j]), list(b[:, j]))
            others = [pearson(list(a[:, i]), list(b[:, j])) for i in np.flatnonzero(complete) if i != j]
            others = [o for o in others if o is not None]
            if r is not None and others:
                matched.append(r)
                unrelated_by_unit.append(float(np.mean(others)))
    if not matched:
        return Agreement((None, None, 0), None, None, None)
    m, u = np.array(matched), np.array(unrelated_by_unit)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(m), size=(RESAMPLES, len(m)))
    boot = (m[draws] - u[draws]).mean(1)
    tail = (1 - INTERVAL_LEVEL) / 2
    interval = (float(np.quantile(boot, tail)), float(np.quantile(boot, 1 - tail)))
    mean, std = mean_std(matched)
    return Agreement((mean, std, len(matched)), float(u.mean()), float((m - u).mean()), interval)


@dataclass
class Findings:
    trend: DepthTrend  # (a), primary measure
    reusability: dict[str, tuple[float, float]]  # run → (mean, std), primary measure
    agreement: Agreement  # (c), PRIMARY vs SECOND

    @property
    def early_layers_closer(self) -> bool:
        return self.trend.holds

    @property
    def white_moves_more(self) -> bool:
        return self.reusability["white"][0] > self.reusability["similar"][0]

    @property
    def metrics_agree(self) -> bool:
        return self.agreement.holds

    def lines(self) -> list[str]:
        mark = lambda ok: "✓" if ok else "✗"  # noqa: E731
        t = self.trend
        rhos = ", ".join(f"{run} ρ {'—' if r is None else f'{r:+.2f}'}" for run, r in t.rho.items())
        broken = " | ".join(f"{run}: {'; '.join(b)}" for run, b in t.breaks.items() if b) or "none"
        p = "undefined" if t.p_value is None else f"{t.p_value:.3f}"
        b = ", ".join(f"{run} {m:.3f} ± {s:.3f}" for run, (m, s) in self.reusability.items())
        g = self.agreement
        if g.matched[0] is None:
            c = "undefined on every layer (a correlation over epochs needs at least two epochs ≥ 1)"
        else:
            lo, hi = g.interval
            c = (f"r {g.matched[0]:.2f} ± {g.matched[1]:.2f} over {g.matched[2]} layers (the paper: "
                 f"{PAPER_R[0]} ± {PAPER_R[1]}); unrelated rising curves (other layers) give r {g.unrelated:.2f}; "
                 f"matched − unrelated {g.difference:+.2f}, {INTERVAL_LEVEL:.0%} interval [{lo:+.2f}, {hi:+.2f}]")
        return [
            f"{mark(t.holds)} (a) distance to the source rises with depth ({PRIMARY}, mean over epochs ≥ 1): "
            f"{rhos}; permutation p = {p} (holds below {TREND_LEVEL} with every ρ > 0); layers that break the "
            f"order: {broken}",
            f"{mark(self.white_moves_more)} (b) the white-background target moves features more than the similar "
            f"one (reusability distance, Table 2): {b}",
            f"{mark(g.holds)} (c) {PRIMARY.split('@')[0].upper().replace(':0.5', ' α=0.5')} on positions and "
            f"Procrustes on filter-map agree: {c}",
        ]

    def as_json(self) -> dict[str, Any]:
        g = self.agreement
        return {"depth_trend": {"spearman_rho": self.trend.rho, "breaks": self.trend.breaks,
                                "p_value": self.trend.p_value, "level": TREND_LEVEL},
                "reusability": self.reusability,
                "agreement": {"measures": [PRIMARY, SECOND], "mean_r": g.matched[0], "std_r": g.matched[1],
                              "layers": g.matched[2], "unrelated_r": g.unrelated, "difference": g.difference,
                              "interval": g.interval, "level": INTERVAL_LEVEL, "paper_r": PAPER_R},
                "early_layers_closer": self.early_layers_closer, "white_moves_more": self.white_moves_more,
                "metrics_agree": self.metrics_agree}


def findings(run_dirs: list[Path]) -> Findings:
    runs = {Path(p).name: read_run(p) for p in run_dirs}
    per_layer, names, first, second = {}, {}, [], []
    for name, run in runs.items():
        epochs = [r for r in run.epochs if r["epoch"] >= 1]
        layers = layer_names(run)
        names[name] = layers
        per_layer[name] = np.nanmean(distance_matrix(epochs, layers, PRIMARY), axis=0)
        first.append(distance_matrix(epochs, layers, PRIMARY))
        second.append(distance_matrix(epochs, layers, SECOND))
    reuse = {row["run"]: (row["mean"], row["std"]) for row in reusability_table(list(runs.values()))
             if row["measure"] == PRIMARY}
    return Findings(depth_trend(per_layer, names), reuse, series_agreement(first, second))
