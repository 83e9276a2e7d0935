"""`ftdyn demo`: the paper's experiment in miniature, offline, on a CPU in minutes.

1. Generate the four domains (engine.domains) — cached by content key.
2. Pretrain the source model on the source domain, once: cached as a state dict with its SHA-256;
   a corrupt or stale file is detected and rebuilt.
3. Fine-tune it on the three targets with `ftdyn run`'s own code path (the weights go in as a
   local state-dict file, the data as ImageFolder trees).
4. Check the paper's findings on the result:
   (a) early layers stay closer to the source than deep layers (per run, averaged over epochs);
   (b) the white-background target moves features more than the similar target (Table 2);
   (c) PWSM and Procrustes layer series correlate positively on average.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from engine.domains import GENERATOR_VERSION, write_domain
from engine.errors import FtdynError
from engine.record import read_run, write_json_atomic
from engine.report import correlation_table, distance_matrix, layer_names, reusability_table
from engine.training import RunConfig, run_training

TARGETS = ("similar", "task", "white")
PRIMARY = "pwsm:0.5@positions"
SECOND = "procrustes@positions"


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


Event = Callable[..., None]


def quiet(kind: str, **info: Any) -> None:
    return None


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


def run_demo(out: Path, settings: DemoSettings, seed: int = 0, device: str = "auto",
             on_event: Event = quiet) -> list[Path]:
    out = Path(out)
    prepare_out(out)
    data = prepare_data(settings, seed, on_event)
    weights = source_model(settings, data, seed, device, on_event)
    write_json_atomic(out / "demo.json", {"settings": dataclasses.asdict(settings), "seed": seed,
                                          "source_weights": str(weights)})
    runs = []
    for target in TARGETS:
        on_event("phase", name=f"fine-tuning on the '{target}' target")
        config = RunConfig(model=settings.model, weights=str(weights), data=str(data[target]), out=str(out / target),
                           epochs=settings.epochs, batch_size=settings.batch_size,
                           lr=settings.white_lr if target == "white" else settings.lr,
                           image_size=settings.image_size, probe_size=settings.probe_size,
                           metrics=["pwsm", "procrustes", "cka"], vis=True, vis_k=settings.vis_k,
                           device=device, workers=settings.workers, seed=seed)
        runs.append(run_training(config, on_event=on_event))
    return runs


# ------------------------------------------------------------------------------------------------
# The paper's findings


@dataclass
class Findings:
    early_vs_deep: dict[str, tuple[float, float]]  # run → (early layers, deep layers), primary measure
    reusability: dict[str, tuple[float, float]]  # run → (mean, std), primary measure
    correlation: tuple[float, float, int]  # PWSM vs Procrustes: mean r, std r, layers

    @property
    def early_layers_closer(self) -> bool:
        return all(early < deep for early, deep in self.early_vs_deep.values())

    @property
    def white_moves_more(self) -> bool:
        return self.reusability["white"][0] > self.reusability["similar"][0]

    @property
    def metrics_agree(self) -> bool:
        return self.correlation[0] is not None and self.correlation[0] > 0

    def lines(self) -> list[str]:
        mark = lambda ok: "✓" if ok else "✗"  # noqa: E731
        a = ", ".join(f"{run} {e:.3f} < {d:.3f}" for run, (e, d) in self.early_vs_deep.items())
        b = ", ".join(f"{run} {m:.3f} ± {s:.3f}" for run, (m, s) in self.reusability.items())
        r, s, n = self.correlation
        return [
            f"{mark(self.early_layers_closer)} (a) early layers stay closer to the source than deep ones "
            f"({PRIMARY}, first half vs second half of the layers, mean over epochs): {a}",
            f"{mark(self.white_moves_more)} (b) the white-background target moves features more than the similar "
            f"one (reusability distance, Table 2): {b}",
            f"{mark(self.metrics_agree)} (c) PWSM and Procrustes agree: Pearson r of their layer series "
            + (f"{r:.2f} ± {s:.2f} over {n} layers (the paper: 0.83 ± 0.43)" if r is not None else
               "undefined on every layer (a correlation over epochs needs at least two; the paper: 0.83 ± 0.43)"),
        ]

    def as_json(self) -> dict[str, Any]:
        return {"early_vs_deep": self.early_vs_deep, "reusability": self.reusability,
                "correlation": {"mean_r": self.correlation[0], "std_r": self.correlation[1],
                                "layers": self.correlation[2]},
                "early_layers_closer": self.early_layers_closer, "white_moves_more": self.white_moves_more,
                "metrics_agree": self.metrics_agree}


def findings(run_dirs: list[Path]) -> Findings:
    runs = {Path(p).name: read_run(p) for p in run_dirs}
    early_vs_deep = {}
    for name, run in runs.items():
        epochs = [r for r in run.epochs if r["epoch"] >= 1]
        per_layer = np.nanmean(distance_matrix(epochs, layer_names(run), PRIMARY), axis=0)
        half = len(per_layer) // 2
        early_vs_deep[name] = (float(per_layer[:half].mean()), float(per_layer[-half:].mean()))
    reuse = {row["run"]: (row["mean"], row["std"]) for row in reusability_table(list(runs.values()))
             if row["measure"] == PRIMARY}
    pair = next(row for row in correlation_table(list(runs.values()))
                if row["measures"] in (f"{PRIMARY} vs {SECOND}", f"{SECOND} vs {PRIMARY}"))
    return Findings(early_vs_deep, reuse, (pair["mean_r"], pair["std_r"], pair["layers"]))
