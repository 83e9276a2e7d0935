"""Option choices and help texts of the commands, declared once here (run, sweep and demo share several)."""

from __future__ import annotations

from enum import Enum


class IntervalMode(str, Enum):
    auto = "auto"
    all = "all"
    off = "off"


class Optimizer(str, Enum):
    adam = "adam"
    sgd = "sgd"


class Preset(str, Enum):
    paper = "paper"


class Strategy(str, Enum):
    full = "full"
    linear_probe = "linear-probe"
    lp_ft = "lp-ft"
    surgical = "surgical"
    discriminative = "discriminative"
    autorgn = "autorgn"


class ImageMode(str, Enum):
    halfcell = "halfcell"
    sixel = "sixel"
    kitty = "kitty"
    auto = "auto"


class Autocast(str, Enum):
    off = "off"
    bf16 = "bf16"
    fp16 = "fp16"


class ReportFormat(str, Enum):
    table = "table"
    csv = "csv"
    json = "json"


INTERVALS_HELP = ("Jackknife intervals over probe-image groups on every layer distance (docs/METRICS.md): auto = "
                  "the streaming views (positions, pooled, cls, filter-map; a few % of the analysis time), all = also "
                  "filter and flat (G+1 times their cost), off.")


INTERVAL_GROUPS_HELP = ("G: image groups of the jackknife (fewer when the widest layer's per-group moments would pass "
                        "256 MiB, or the probe set has fewer images).")


INTERVAL_LEVEL_HELP = "Coverage of the intervals (0.9: 90 %)."


ANALYSES_HELP = ("Analyses measured every epoch, comma-separated: distance (feature distance per layer), drift "
                 "(parameter drift per module), invariance (STIR per layer: the source's invariances the tuned model "
                 "keeps; inverts the probe images through the source when the run starts) (default: the cheap ones, "
                 "distance and drift). Barrier, criticality, UMAP and the full STIR matrices run afterwards: "
                 "`ftdyn transfer --help`, `ftdyn umap --help`, `ftdyn invariance --help`.")


class FigureFormat(str, Enum):
    pdf = "pdf"
    png = "png"
    svg = "svg"


TRAIN_IMAGES_HELP = "Training images the train loss/error is measured on (a seeded subset; 0: all)."


BN_BATCHES_HELP = ("Training batches BatchNorm statistics are re-estimated on, wherever the weights differ from a "
                   "trained model's.")


DATA_HELP = "The run's data folder, if it has moved since training."
