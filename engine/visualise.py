"""What a single filter looks at, epoch by epoch (the paper's §3.3, Figs 5–8), without its defects.

* **Class-based**: for filter f and class c, each probe image of c contributes the input region
  under the receptive field of f's strongest location, weighted by that maximum activation:
      A_{f,c} = Σ_i max(a_i, 0) · crop_i / Σ_i max(a_i, 0)
  Regions reaching outside the image are padded with the ImageNet mean colour — what the network's
  zero padding sees after normalisation — so every crop has the field's exact size.
* **Sample-based**: f's map, bilinearly upsampled to the image, drawn over it as a heatmap whose
  colour scale is [0, max of the *source* model's map] for that (layer, filter, image) at every
  epoch, so epochs are comparable; growth beyond the source's range shows as saturation.
* Images stay RGB end to end (the authors showed BGR as RGB).
* **Legible at any depth**: a deep layer's field can be many times the image (ResNet's layer4 sees
  435 px of a 64 px image), so its average is mostly padding, and averaging many crops flattens the
  contrast. What is written is the average cropped to the part of the field that lay inside an image
  (where any contributing crop did), contrast-stretched per image between its 1st and 99th
  percentiles (:func:`legible`); the index entry says so (``display``) and the app shows it.

Filters per layer: the k whose distance to the source is largest at the latest epoch, k seeded
random ones, and any the user names. Once chosen, a filter is drawn at every later visualised
epoch, and its source images are drawn from the source model's activations at that moment.
Everything is written atomically under RUN/vis/ and listed in RUN/vis/index.jsonl; the montages
(source, 1…T per filter) are written when the run finishes, and by `ftdyn vis`.
"""

from __future__ import annotations

import io
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from engine.capture import feature_map_shape
from engine.errors import FtdynError
from engine.events import Event, quiet
from engine.receptive import LayerFields, patch_fields, receptive_fields
from engine.record import VIS_INDEX, append_lines, read_vis_index, write_atomic

if TYPE_CHECKING:
    from engine.models import LayerInfo

PAD_COLOUR = np.array([124, 116, 104], dtype=np.float64)  # ImageNet mean: zero after normalisation
HEATMAP_ALPHA = 0.55
MONTAGE_TILE = 96


def jet(values: np.ndarray) -> np.ndarray:
    """Jet colour map on [0, 1] → uint8 RGB (blue → cyan → yellow → red)."""
    v = np.clip(values, 0.0, 1.0)
    r = np.clip(1.5 - np.abs(4 * v - 3), 0, 1)
    g = np.clip(1.5 - np.abs(4 * v - 2), 0, 1)
    b = np.clip(1.5 - np.abs(4 * v - 1), 0, 1)
    return (np.stack([r, g, b], -1) * 255).round().astype(np.uint8)


def crop(image: np.ndarray, region: tuple[int, int, int, int]) -> np.ndarray:
    """image[top:bottom, left:right] with the outside filled by PAD_COLOUR; float64 (h, w, 3)."""
    top, left, bottom, right = region
    out = np.empty((bottom - top, right - left, 3), dtype=np.float64)
    out[:] = PAD_COLOUR
    window = inside(image.shape[:2], region)
    if window is not None:
        (t, b, l, r) = window
        out[t - top:b - top, l - left:r - left] = image[t:b, l:r]
    return out


def inside(shape: tuple[int, int], region: tuple[int, int, int, int]) -> tuple[int, int, int, int] | None:
    """The part (top, bottom, left, right) of ``region`` that lies in an image of ``shape``."""
    top, left, bottom, right = region
    t, l, b, r = max(top, 0), max(left, 0), min(bottom, shape[0]), min(right, shape[1])
    return (t, b, l, r) if t < b and l < r else None


def class_average(images: np.ndarray, locations: np.ndarray, activations: np.ndarray,
                  fields: LayerFields, f: int) -> np.ndarray | None:
    """Activation-weighted mean of the receptive-field crops at each image's strongest location.
    ``images`` (n, H, W, 3) uint8, ``locations`` (n, 2) map coordinates, ``activations`` (n,).

    Deep fields can be far larger than the image, so instead of materialising each padded crop the
    padding's share is added once (Σw · PAD) and each image adds w · (pixels − PAD) where it
    overlaps: the same sum, at the cost of the overlap only."""
    weights = np.maximum(activations.astype(np.float64), 0.0)
    if weights.sum() <= 0:
        return None  # the filter never fires on this class
    rf = fields.for_filter(f)
    total = np.empty((*rf.size, 3))
    total[:] = weights.sum() * PAD_COLOUR
    for image, (i, j), weight in zip(images, locations, weights):
        region = rf.region(int(i), int(j))
        window = inside(image.shape[:2], region)
        if weight > 0 and window is not None:
            t, b, l, r = window
            total[t - region[0]:b - region[0], l - region[1]:r - region[1]] += weight * (image[t:b, l:r] - PAD_COLOUR)
    return total / weights.sum()


def in_image_extent(shape: tuple[int, int], locations: np.ndarray, activations: np.ndarray,
                    field) -> tuple[int, int, int, int] | None:
    """(top, bottom, left, right), in the field's own coordinates, of the part of the field that lay
    inside the image for some image that contributes to the class average (activation > 0)."""
    extent = None
    for (i, j), weight in zip(locations, activations):
        region = field.region(int(i), int(j))
        window = inside(shape, region)
        if weight > 0 and window is not None:
            t, b, l, r = window
            box = (t - region[0], b - region[0], l - region[1], r - region[1])
            extent = box if extent is None else (min(extent[0], box[0]), max(extent[1], box[1]),
                                                 min(extent[2], box[2]), max(extent[3], box[3]))
    return extent


def legible(average: np.ndarray, extent: tuple[int, int, int, int] | None) -> np.ndarray:
    """A class average as drawn: cropped to ``extent`` (the part that saw image pixels), then its values
    stretched from their 1st–99th percentiles to 0–255, the three channels together (hues are kept). An
    average with no contrast to stretch (under one grey level) is left as it is."""
    if extent is not None:
        top, bottom, left, right = extent
        average = average[top:bottom, left:right]
    low, high = np.percentile(average, [1, 99])
    if high - low < 1.0:
        return average
    return np.clip((average - low) * (255.0 / (high - low)), 0, 255)


DISPLAY = "the part of the receptive field inside the image, contrast stretched per image"


def overlay(image: np.ndarray, feature_map: np.ndarray, scale: float) -> np.ndarray:
    """Heat map of ``feature_map`` on [0, scale], upsampled to the image and blended over it."""
    h, w = image.shape[:2]
    upsampled = torch.nn.functional.interpolate(torch.as_tensor(feature_map, dtype=torch.float64)[None, None],
                                                size=(h, w), mode="bilinear", align_corners=False)[0, 0].numpy()
    heat = jet(upsampled / scale if scale > 0 else np.zeros_like(upsampled)).astype(np.float64)
    return (HEATMAP_ALPHA * heat + (1 - HEATMAP_ALPHA) * image.astype(np.float64)).round().astype(np.uint8)


def png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.clip(array, 0, 255).round().astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def montage(rows: list[list[Path | None]], tile: int = MONTAGE_TILE, gap: int = 2) -> np.ndarray:
    """Tiles in a grid (rows × epochs), each scaled to ``tile`` px; missing tiles stay dark."""
    n_rows, n_cols = len(rows), max(len(r) for r in rows)
    sheet = np.full((n_rows * (tile + gap) - gap, n_cols * (tile + gap) - gap, 3), 24, dtype=np.uint8)
    for r, row in enumerate(rows):
        for c, path in enumerate(row):
            if path is not None and path.exists():
                with Image.open(path) as image:
                    scaled = image.convert("RGB").resize((tile, tile), Image.NEAREST)
                sheet[r * (tile + gap):r * (tile + gap) + tile, c * (tile + gap):c * (tile + gap) + tile] = np.asarray(scaled)
    return sheet


class FilterEvidence:
    """What visualisation needs from one probe pass, gathered batch by batch (an analysis observer):
    per (image, filter) the strongest location and its activation in both models, the full maps of
    a few sample images, and per-filter moments for a correlation-based ranking."""

    def __init__(self, layers: list[str], sample_indices: list[int], first_image: int = 0):
        self.layers = layers
        self.sample_indices = sample_indices
        self.seen = first_image  # a process of a distributed run sees the probe images from first_image on
        self.peak: dict[tuple[str, str], list] = {}  # (layer, side) → [(values (b, c), locations (b, c, 2))]
        self.samples: dict[tuple[str, str], dict[int, np.ndarray]] = {}
        self.moments: dict[str, torch.Tensor] = {}

    def update(self, layer: str, source: torch.Tensor, tuned: torch.Tensor) -> None:
        width = source.shape[-1]
        for side, acts in (("source", source), ("tuned", tuned)):
            values, flat_index = acts.flatten(2).max(2)
            locations = torch.stack([flat_index // width, flat_index % width], -1)
            self.peak.setdefault((layer, side), []).append((values.cpu().numpy(), locations.cpu().numpy()))
            for k in range(acts.shape[0]):
                if self.seen + k in self.sample_indices:
                    self.samples.setdefault((layer, side), {})[self.seen + k] = acts[k].float().cpu().numpy()
        x = source.transpose(0, 1).flatten(1).double()
        y = tuned.transpose(0, 1).flatten(1).double()
        sums = torch.stack([x.sum(1), y.sum(1), (x * x).sum(1), (y * y).sum(1), (x * y).sum(1),
                            torch.full_like(x[:, 0], x.shape[1])])
        self.moments[layer] = self.moments.get(layer, 0) + sums.cpu()

    def batch_done(self, batch_size: int) -> None:
        self.seen += batch_size

    def gather(self, processes) -> None:
        """Every process's share of the probe images on rank 0, in image order (engine.distributed)."""
        shares = processes.gather_objects((self.peak, self.samples, self.moments, self.seen))
        if shares is None:
            return
        self.peak, self.samples, self.moments = {}, {}, {}
        for peak, samples, moments, seen in shares:
            for key, parts in peak.items():
                self.peak.setdefault(key, []).extend(parts)
            for key, maps in samples.items():
                self.samples.setdefault(key, {}).update(maps)
            for layer, sums in moments.items():
                self.moments[layer] = self.moments.get(layer, 0) + sums
        self.seen = shares[-1][3]

    def peaks(self, layer: str, side: str) -> tuple[np.ndarray, np.ndarray]:
        parts = self.peak[(layer, side)]
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    def decorrelation(self, layer: str) -> np.ndarray:
        """1 − Pearson r per filter between source and tuned activations (NaN where constant)."""
        sx, sy, sxx, syy, sxy, n = self.moments[layer].numpy()
        cov = sxy - sx * sy / n
        var = (sxx - sx * sx / n) * (syy - sy * sy / n)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(var > 0, 1 - cov / np.sqrt(np.where(var > 0, var, 1)), np.nan)


@dataclass
class VisSettings:
    top_k: int = 8
    random_k: int = 8
    named: dict[str, list[int]] = field(default_factory=dict)
    samples: int = 4
    seed: int = 0
    classes: list[str] | None = None  # draw class-based images for these classes only


def parse_named_filters(text: str | None) -> dict[str, list[int]]:
    """'layer4.1:3,layer4.1:17,relu:0' → {'layer4.1': [3, 17], 'relu': [0]}."""
    named: dict[str, list[int]] = {}
    for item in (text or "").split(","):
        if not item.strip():
            continue
        layer, sep, index = item.strip().rpartition(":")
        if not sep or not index.isdigit():
            raise ValueError(f"--vis-filters takes layer:index pairs, e.g. layer4.1:3 (got '{item}')")
        named.setdefault(layer, []).append(int(index))
    return named


def sample_indices(labels: list[int], count: int) -> list[int]:
    """The first probe image of each of the first ``count`` classes."""
    chosen: dict[int, int] = {}
    for index, label in enumerate(labels):
        if label not in chosen and len(chosen) < count:
            chosen[label] = index
    return sorted(chosen.values())


class Visualiser:
    """Chooses filters and writes their class- and sample-based images for an epoch."""

    def __init__(self, run_dir: Path, fields: dict[str, LayerFields], filters: dict[str, int],
                 probe_images: np.ndarray, probe_labels: list[int], classes: list[str], settings: VisSettings):
        self.dir = Path(run_dir) / "vis"
        self.fields, self.filters = fields, filters
        self.images, self.labels = probe_images, np.asarray(probe_labels)
        self.classes, self.settings = classes, settings
        self.samples = sample_indices(probe_labels, settings.samples)
        self.chosen: dict[str, dict[int, str]] = {layer: {} for layer in fields}
        self.drawn: set[tuple[str, int, int]] = set()  # (layer, filter, epoch)
        self.listed: set[str] = set()  # image paths already in the index
        for layer, indices in settings.named.items():
            if layer not in fields:
                raise ValueError(f"--vis-filters names layer '{layer}', which is not hooked ({', '.join(fields)})")
            for f in indices:
                if not 0 <= f < filters[layer]:
                    raise ValueError(f"--vis-filters: layer '{layer}' has {filters[layer]} filters, not {f + 1}")
        self.load_index()

    def focus(self, layer: str, f: int) -> None:
        """Draw only filter ``f`` of ``layer`` (what `ftdyn vis` asks for)."""
        self.fields = {layer: self.fields[layer]}
        self.chosen = {layer: {f: "named"}}
        self.settings = VisSettings(top_k=0, random_k=0, named={layer: [f]}, samples=self.settings.samples,
                                    seed=self.settings.seed, classes=self.settings.classes)

    def load_index(self) -> None:
        """Pick up what a previous (interrupted) process already chose and drew."""
        for entry in read_vis_index(self.dir.parent):
            self.listed.add(entry["path"])
            if entry["layer"] in self.chosen:
                self.chosen[entry["layer"]].setdefault(entry["filter"], entry["chosen_by"])
                self.drawn.add((entry["layer"], entry["filter"], entry["epoch"]))

    def choose(self, layer: str, change: np.ndarray) -> dict[int, str]:
        chosen = self.chosen[layer]
        for f in self.settings.named.get(layer, []):
            chosen.setdefault(f, "named")
        rng = random.Random(f"{self.settings.seed}:{layer}")
        for f in rng.sample(range(self.filters[layer]), min(self.settings.random_k, self.filters[layer])):
            chosen.setdefault(f, "random")
        finite = np.where(np.isfinite(change), change, -np.inf)
        for f in np.argsort(-finite, kind="stable")[: self.settings.top_k]:
            if np.isfinite(finite[f]) and finite[f] > 0:
                chosen.setdefault(int(f), "top-change")
        return chosen

    def render(self, epoch: int, evidence: FilterEvidence, changes: dict[str, np.ndarray], redraw: bool = False) -> float:
        """Write this epoch's images (and the source images of newly chosen filters); seconds taken.
        ``redraw`` draws images again even where the index already lists them."""
        start = time.perf_counter()
        entries = []
        for layer in self.fields:
            change = changes.get(layer)
            chosen = self.choose(layer, change if change is not None else evidence.decorrelation(layer))
            for f, reason in sorted(chosen.items()):
                for drawn_epoch, side in ((0, "source"), (epoch, "tuned")):
                    if redraw or (layer, f, drawn_epoch) not in self.drawn:
                        entries += self.draw(layer, f, drawn_epoch, evidence, side, reason)
                        self.drawn.add((layer, f, drawn_epoch))
        entries = [e for e in entries if e["path"] not in self.listed]
        if entries:
            append_lines(self.dir.parent / VIS_INDEX, entries)
            self.listed.update(e["path"] for e in entries)
        return time.perf_counter() - start

    def filter_dir(self, layer: str, f: int) -> Path:
        return self.dir / layer / f"f{f:04d}"

    def draw(self, layer: str, f: int, epoch: int, evidence: FilterEvidence, side: str, reason: str) -> list[dict]:
        folder = self.filter_dir(layer, f)
        folder.mkdir(parents=True, exist_ok=True)
        values, locations = evidence.peaks(layer, side)
        entries = []
        base = {"layer": layer, "filter": f, "epoch": epoch, "chosen_by": reason}
        for c, name in enumerate(self.classes):
            members = self.labels == c
            if not members.any() or (self.settings.classes is not None and name not in self.settings.classes):
                continue
            average = class_average(self.images[members], locations[members, f], values[members, f],
                                    self.fields[layer], f)
            if average is None:
                continue
            extent = in_image_extent(self.images.shape[1:3], locations[members, f], values[members, f],
                                     self.fields[layer].for_filter(f))
            path = folder / f"class-{c:03d}-e{epoch:03d}.png"
            write_atomic(path, png_bytes(legible(average, extent)))
            entries.append({**base, "kind": "class", "class": name, "path": str(path.relative_to(self.dir)),
                            "display": DISPLAY})
        for index in self.samples:
            source_map = evidence.samples[(layer, "source")][index][f]
            feature_map = evidence.samples[(layer, side)][index][f]
            scale = float(source_map.max())
            path = folder / f"sample-{index:04d}-e{epoch:03d}.png"
            write_atomic(path, png_bytes(overlay(self.images[index], feature_map, scale)))
            entries.append({**base, "kind": "sample", "image": index, "class": self.classes[self.labels[index]],
                            "scale": [0.0, scale], "path": str(path.relative_to(self.dir))})
        return entries

    def write_all_montages(self) -> float:
        """Every chosen filter's montages (at the end of a run: they read every epoch's images)."""
        start = time.perf_counter()
        for layer, chosen in self.chosen.items():
            for f in chosen:
                self.write_montages(layer, f)
        return time.perf_counter() - start

    def write_montages(self, layer: str, f: int) -> None:
        """Rows: classes (or sample images); columns: source, then every visualised epoch."""
        folder = self.filter_dir(layer, f)
        epochs = sorted(e for (l, g, e) in self.drawn if l == layer and g == f)
        class_rows = [[folder / f"class-{c:03d}-e{e:03d}.png" for e in epochs] for c in range(len(self.classes))]
        sample_rows = [[folder / f"sample-{i:04d}-e{e:03d}.png" for e in epochs] for i in self.samples]
        for name, rows in (("montage-class.png", class_rows), ("montage-sample.png", sample_rows)):
            rows = [row for row in rows if any(p.exists() for p in row)]
            if rows:
                write_atomic(folder / name, png_bytes(montage(rows)))


# -- the filter visualisations of a run's layers (the monitor's and `ftdyn vis`'s) --------------------

def filter_visualiser(run_dir: Path, model: nn.Module, layers: "list[LayerInfo]", image_size: int, images: np.ndarray,
                      labels: list[int], classes: list[str], settings: dict[str, Any],
                      on_event: Event = quiet) -> tuple[Visualiser, dict[str, str]]:
    """The filter visualisations of ``layers`` over the probe ``images`` (n, s, s, 3) uint8, and per layer
    how class-based images locate a unit: exact receptive fields for convolutional maps; where none
    is defined (tokens, after attention, or a network torch.fx cannot trace) the patch each position
    starts from, said once as a warning and recorded in the config (``vis_fields``)."""
    try:
        named = parse_named_filters(settings["vis_filters"])
    except ValueError as exc:
        raise FtdynError(str(exc)) from None
    maps = [layer.name for layer in layers if layer.layout and layer.layout.kind == "channels_first"]
    fields = {}
    if maps:
        try:
            fields = receptive_fields(model, maps, image_size)
        except FtdynError as exc:
            on_event("warning", text=f"no exact receptive fields ({exc}); class-based images show the "
                                     f"patch each position starts from")
    shapes = {layer.name: feature_map_shape(layer.shape, layer.layout) for layer in layers if layer.name not in fields}
    kinds = {name: "receptive field" for name in fields} | {name: "patch origin" for name in shapes}
    fields.update(patch_fields(shapes, image_size))
    filters = {layer.name: feature_map_shape(layer.shape, layer.layout)[0] for layer in layers}
    try:
        return Visualiser(run_dir, fields, filters, images, labels, classes, VisSettings(
            top_k=settings["vis_k"], random_k=settings["vis_k"], named=named, seed=settings["seed"])), kinds
    except ValueError as exc:
        raise FtdynError(str(exc)) from None


def per_filter_changes(layers: dict[str, dict]) -> dict[str, np.ndarray]:
    """Per layer, how far each filter moved: the first filter-view measure's per-filter distances, else
    the per-filter angle the `positions` view gives for free (METRICS.md, "Ranking filters")."""
    changes = {}
    for layer, views in layers.items():
        for _, entry in sorted(views.items(), key=lambda item: item[0] not in ("filter", "filter-map")):
            if entry.get("per_filter"):
                first = next(iter(entry["per_filter"].values()))
                changes[layer] = np.array([np.nan if v is None else v for v in first], dtype=np.float64)
                break
    return changes
