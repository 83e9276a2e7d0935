"""Shared invariance between the source model and its fine-tuned epochs: STIR (Nanda et al. 2022), as
Merlin et al. (2023) use it on a pretrained model and its fine-tuned versions (ANALYSES.md §5).

**Inversion.** For a model m, a hooked layer i and the probe images X (pixels in [0, 1]; the run's
normalisation is applied inside the forward pass), find X′ that m represents at layer i like X. Per
image, from noise x′⁰ = clip₀¹(z), z ~ N(0, 1) (as STIR's code seeds it):

    e(x′) = ‖f_i(x′) − f_i(x)‖₂ / ‖f_i(x)‖₂          (f_i: the layer's whole output, flattened)
    x′ ← clip₀¹( x′ − η · g / (‖g‖₂ + 10⁻¹⁰) ),   g = ∇ₓ′ e(x′)   (each image its own step)

for ``steps`` steps (η = 0.5, 500 steps as Merlin et al.), keeping each image's best iterate (the
start and every step are candidates). Inversions through the source depend only on (source model,
layer, probe set, settings): they are computed once and cached in ``RUN/invariance/``.

**STIR.** With X′ᵢ inverted through m₁ at layer i, and f²ⱼ model m₂'s layer j:

    STIR(m₂ⱼ | m₁ᵢ) = CKA( f²ⱼ(X), f²ⱼ(X′ᵢ) )

— how far m₂ is invariant to what m₁'s layer i is invariant to (1: m₂ cannot tell X′ᵢ from X). CKA is
linear CKA over all probe images (STIR's code keeps only its last batch; this is 1 − ``cka_distance``
on the same matrices). Per epoch t, m₁ = the source θ⁰ and m₂ = θᵗ:

* STIR(θᵗⱼ | θ⁰ᵢ) for every (i, j) — the source's invariances kept by the tuned model. One forward
  pass of θᵗ over each X′ᵢ gives every j, so the whole matrix costs L passes over the probe set.
* with ``both_directions``: STIR(θ⁰ᵢ | θᵗⱼ) — what the tuned model is invariant to that the source
  shares; it inverts θᵗ at every layer, L inversions per epoch (the expensive direction).
* CKA(f⁰ᵢ(X), fᵗⱼ(X)) beside them: two layers can be far apart in CKA and still share invariances.

Merlin et al. name measures of invariance *retained* and *forgotten* during fine-tuning; their
formulas (§3 of arXiv 2307.06006) could not be read here (only the abstract is stored, and the
authors' code, nvedant07/invariances_in_reps, writes the STIR matrices in both directions and CKA
but no such measure). So this module reports plain STIR in both directions, as docs/ANALYSES.md says.

The command (`ftdyn invariance`, :func:`engine.posthoc.invariance.run_invariance`) lives with the
other post-hoc analyses; this module holds the measure and the epoch part.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from engine.capture import LayerReached, layer_output
from engine.data import IMAGENET_MEAN, IMAGENET_STD
from engine.errors import FtdynError
from engine.events import Event, quiet
from engine.models import source_fingerprint
from engine.record import write_atomic
from engine.untrusted import safe_file_name

CACHE_DIR = "invariance"  # RUN/invariance/inversions-<layer>.pt
BATCH = 32  # images inverted together (each image still takes its own normalised step)


@dataclass(frozen=True)
class InversionSettings:
    steps: int = 500
    step_size: float = 0.5
    images: int = 0  # 0: the whole probe set
    seed: int | None = 0  # None (the command's default): the run's seed, as its live part uses
    # the (mean, std) the network's inputs are normalised with; None: ImageNet's (torchvision's networks)
    normalisation: tuple[tuple[float, ...], tuple[float, ...]] | None = None

    def check(self) -> None:
        if self.steps < 1 or not (self.step_size > 0 and math.isfinite(self.step_size)) or self.images < 0:
            raise FtdynError(f"inversions need steps ≥ 1, a step size > 0 and images ≥ 0 (0: every probe image); "
                             f"got {self.steps} steps, step size {self.step_size}, {self.images} images")


def refuse_channel_mixing(shuffle_blocks: str | None) -> None:
    """Inversions work in pixel space, undoing the run's normalisation per colour channel; a pixel
    shuffle moves values between channels, so its probe images have no pixel space to undo into."""
    if shuffle_blocks == "pixel":
        raise FtdynError("shared invariance cannot invert a run with --shuffle-blocks pixel (it mixes colour "
                         "channels, so the images have no pixel space); block shuffles work")


def layer_outputs(model: nn.Module, images: torch.Tensor, layers: list[str], keep_graph: bool = False,
                  normalisation: tuple | None = None) -> dict:
    """{layer: its output flattened per image} for pixel-space ``images`` (normalised as the network
    takes them: ``normalisation``, default ImageNet's); the forward pass stops at the last of
    ``layers`` in execution order where that is possible."""
    mean, std = (torch.tensor(v, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
                 for v in normalisation or (IMAGENET_MEAN, IMAGENET_STD))
    found: dict[str, torch.Tensor] = {}

    def hook(name):
        def store(_module, _inputs, output):
            output = layer_output(output)
            found[name] = output.flatten(1) if keep_graph else output.detach().flatten(1)
            if len(found) == len(layers):
                raise LayerReached
        return store

    handles = [model.get_submodule(name).register_forward_hook(hook(name)) for name in layers]
    try:
        model((images - mean) / std)
    except LayerReached:
        pass
    finally:
        for handle in handles:
            handle.remove()
    return found


def invert(model: nn.Module, layer: str, targets: torch.Tensor, settings: InversionSettings,
           generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(X′, each image's best relative error) for pixel-space ``targets`` at ``layer`` of ``model``."""
    model.eval()
    with torch.no_grad():
        goal = layer_outputs(model, targets, [layer], normalisation=settings.normalisation)[layer]
    scale = goal.norm(dim=1).clamp_min(1e-30)
    x = torch.randn(targets.shape, generator=generator, device="cpu").to(targets.device).clamp(0.0, 1.0)
    best, best_error = x.clone(), torch.full((len(x),), math.inf, device=x.device)
    for step in range(settings.steps + 1):
        x.requires_grad_(True)
        output = layer_outputs(model, x, [layer], keep_graph=True, normalisation=settings.normalisation)[layer]
        if not output.requires_grad:
            raise FtdynError(f"layer '{layer}' cannot be inverted: its output does not depend differentiably on "
                             f"the image")
        error = (output - goal).norm(dim=1) / scale
        if not torch.isfinite(error).all():
            raise FloatingPointError(f"the relative error became non-finite at step {step}")
        better = error.detach() < best_error
        best[better], best_error[better] = x.detach()[better], error.detach()[better]
        if step == settings.steps:
            break
        gradient, = torch.autograd.grad(error.sum(), x)  # images are independent: each gets its own gradient
        norms = gradient.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
        x = (x.detach() - settings.step_size * gradient / (norms + 1e-10)).clamp(0.0, 1.0)
    return best, best_error


GRAM_CHUNK_BYTES = 64 * 2**20  # float64 columns of F converted at a time


def centred_gram(features: torch.Tensor) -> torch.Tensor:
    """H K H with K = F Fᵀ: what linear CKA needs of one side, n × n whatever the width. K is summed in
    float64 over chunks of F's columns and centred as a Gram (K − 1kᵀ/n − k1ᵀ/n + 1ᵀK1/n²), so F — a
    wide layer's n × c·h·w outputs — is never copied whole, to float64 or centred."""
    n, width = features.shape
    step = max(1, GRAM_CHUNK_BYTES // (8 * n))
    gram = torch.zeros(n, n, dtype=torch.float64, device=features.device)
    for start in range(0, width, step):
        chunk = features[:, start:start + step].double()
        gram += chunk @ chunk.T
    means = gram.mean(0, keepdim=True)
    return gram - means - means.T + gram.mean()


def gram_cka(a: torch.Tensor, b: torch.Tensor) -> float | None:
    """Linear CKA from two centred Grams: ⟨A, B⟩ / (‖A‖ ‖B‖) (None where a side is constant)."""
    denominator = float(a.norm() * b.norm())
    return float((a * b).sum()) / denominator if denominator > 0 else None


def probe_pixels(probe, images: int, normalisation: tuple | None = None) -> torch.Tensor:
    """The probe images (a run's probe dataset) in pixel space [0, 1] (the run's normalisation —
    ``normalisation``, default ImageNet's — undone), all of them or an evenly spaced ``images`` of them."""
    chosen = list(range(len(probe)))
    if 0 < images < len(chosen):
        chosen = sorted({round(k) for k in np.linspace(0, len(chosen) - 1, images)})
    mean, std = (torch.tensor(v).view(3, 1, 1) for v in normalisation or (IMAGENET_MEAN, IMAGENET_STD))
    pixels = torch.stack([probe[i][0] * std + mean for i in chosen]).clamp(0.0, 1.0)
    return pixels


def inversion_key(source: nn.Module, layer: str, pixels: torch.Tensor, settings: InversionSettings) -> str:
    """What an inversion depends on: the source weights, the probe images' pixels (so a moved data
    folder still matches and a changed image does not), the layer and the settings."""
    recorded = {k: v for k, v in asdict(settings).items() if not (k == "normalisation" and v is None)}  # keys as before
    content = {"source": source_fingerprint(source), "layer": layer, **recorded,
               "probe": hashlib.sha256(pixels.detach().cpu().float().numpy().tobytes()).hexdigest()}
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()


def cached_inversions(run_dir: Path, source: nn.Module, layer: str, pixels: torch.Tensor,
                      settings: InversionSettings, on_event: Event) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """(X′, errors, reused) through the source at ``layer``: from RUN/invariance/ when a file with its
    key holds what an inversion must (float32 pixels in [0, 1] of the probe's shape, one finite error
    per image), else computed and cached. The key is in the file name, so inversions with other
    settings (the live part's, a command's) sit side by side instead of replacing each other."""
    folder = run_dir / CACHE_DIR
    if folder.is_symlink():
        raise FtdynError(f"'{folder}' is a link; ftdyn writes only inside the run directory")
    key = inversion_key(source, layer, pixels, settings)
    path = folder / f"inversions-{safe_file_name(layer)}-{key[:16]}.pt"
    if path.is_file() and not path.is_symlink():
        try:
            stored = torch.load(path, map_location="cpu", weights_only=True)
            images, errors = stored["images"], stored["errors"]
            if stored.get("key") == key and images.dtype == torch.float32 and images.shape == pixels.shape and \
                    errors.shape == (len(pixels),) and torch.isfinite(errors).all() and \
                    bool(((images >= 0) & (images <= 1)).all()):
                return images.to(pixels.device), errors.to(pixels.device), True
        except Exception:  # a damaged or foreign cache file is recomputed, never trusted
            pass
    started = time.perf_counter()
    images, errors = invert_in_batches(source, layer, pixels, settings, on_event, f"inverting {layer}")
    folder.mkdir(exist_ok=True)
    buffer = io.BytesIO()
    torch.save({"key": key, "images": images.float().cpu(), "errors": errors.float().cpu(),
                "seconds": time.perf_counter() - started}, buffer)
    write_atomic(path, buffer.getvalue())  # replaces a link planted at the name, never writes through it
    return images, errors, False


def invert_in_batches(model: nn.Module, layer: str, pixels: torch.Tensor, settings: InversionSettings,
                      on_event: Event, task: str) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(settings.seed)
    images, errors = [], []
    for start in range(0, len(pixels), BATCH):
        found, error = invert(model, layer, pixels[start:start + BATCH], settings, generator)
        images.append(found)
        errors.append(error)
        on_event("progress", task=task, done=min(len(pixels), start + BATCH), total=len(pixels), info=layer)
    return torch.cat(images), torch.cat(errors)


@torch.no_grad()
def layer_grams(model: nn.Module, pixels: torch.Tensor, layers: list[str],
                normalisation: tuple | None = None) -> dict[str, torch.Tensor]:
    """{layer: centred Gram of its flattened outputs over all ``pixels``}."""
    model.eval()
    outputs: dict[str, list[torch.Tensor]] = {layer: [] for layer in layers}
    for start in range(0, len(pixels), BATCH):
        found = layer_outputs(model, pixels[start:start + BATCH], layers, normalisation=normalisation)
        for layer in layers:
            outputs[layer].append(found[layer])  # on the model's device, where the Gram is made
    grams = {}
    for layer in layers:  # each layer's outputs are let go as soon as its Gram is made
        grams[layer] = centred_gram(torch.cat(outputs.pop(layer))).cpu()
    return grams


def stir_matrix(measured: nn.Module, inverted: dict[str, torch.Tensor | None], pixels: torch.Tensor,
                layers: list[str], normalisation: tuple | None = None) -> list[list[float | None]]:
    """[i][j] = STIR(measured at layer j | the model X′ᵢ was inverted through, at layer i)."""
    clean = layer_grams(measured, pixels, layers, normalisation)
    rows = []
    for inverted_layer in layers:
        found = inverted.get(inverted_layer)
        if found is None:
            rows.append([None] * len(layers))
            continue
        moved = layer_grams(measured, found, layers, normalisation)
        rows.append([gram_cka(clean[j], moved[j]) for j in layers])
    return rows


class SharedInvariance:
    """The epoch part: STIR(θᵗᵢ | θ⁰ᵢ) of every hooked layer, every epoch (``--analyses …,invariance``).
    The inversions through the source are made (or read from the cache) when the run starts; then an
    epoch costs one forward pass over the probe images and one over each layer's inversions."""

    name = "invariance"
    when = "epoch"
    section = "invariance"
    uses_probe = False  # its own passes: over X′ᵢ, which the shared probe pass does not see
    default = False  # the inversions cost L × steps forward and backward passes over the probe set
    summary = "shared invariance with the source (STIR per layer, from inversions through the source made at the start)"

    @classmethod
    def build(cls, context) -> "SharedInvariance":
        if context.probe is None or context.run_dir is None:
            raise FtdynError("the invariance analysis needs the run's probe images and directory")
        refuse_channel_mixing(context.shuffle_blocks)
        return cls(context.source, context.layer_names, context.probe, context.run_dir, context.device,
                   InversionSettings(**(context.inversion or {})), context.on_event or quiet)

    def __init__(self, source: nn.Module, layers: list[str], probe, run_dir: Path, device, settings: InversionSettings,
                 on_event: Event = quiet):
        settings.check()
        self.source, self.layers, self.settings = source, layers, settings
        self.pixels = probe_pixels(probe, settings.images, settings.normalisation).to(device)
        self.inverted: dict[str, torch.Tensor | None] = {}
        self.errors: dict[str, float] = {}
        self.notes: list[str] = []
        for layer in layers:
            try:
                images, errors, _ = cached_inversions(run_dir, source, layer, self.pixels, settings, on_event)
            except FloatingPointError as exc:
                self.inverted[layer] = None
                self.notes.append(f"{layer}: inversion stopped ({exc}); no STIR for it")
                on_event("warning", text=self.notes[-1])
                continue
            self.inverted[layer], self.errors[layer] = images, float(errors.median())
        self.model: nn.Module | None = None

    def declaration(self) -> dict:
        return {"title": "shared invariance with the source: STIR(tuned layer | source layer)",
                "unit": "STIR (1: the tuned layer cannot tell the source's inversions from the images)",
                "measures": ["stir@layers"], "rows": {"layers": self.layers},
                "note": f"{self.settings.steps} inversion steps of η = {self.settings.step_size} on "
                        f"{len(self.pixels)} probe images; median relative error per layer "
                        + ", ".join(f"{layer} {error:.3f}" for layer, error in self.errors.items())
                        + "".join(f"; {note}" for note in self.notes)}

    def begin(self, model: nn.Module) -> None:
        self.model = model

    def finish(self) -> dict:
        training = self.model.training
        try:
            clean = layer_grams(self.model, self.pixels, self.layers, self.settings.normalisation)
            values = {}
            for layer in self.layers:
                moved = self.inverted.get(layer)
                values[layer] = None if moved is None else \
                    gram_cka(clean[layer], layer_grams(self.model, moved, [layer], self.settings.normalisation)[layer])
        finally:
            self.model.train(training)
        return {"layers": {"stir": values}}

