"""How the built-in post-hoc results are shown: the declaration (``show``, :mod:`engine.results`) each
writes beside its data.

Each analysis's writer attaches its declaration from here, and a result file written before
declarations existed (no ``show``) is read through the same function, so old runs read as before.
Torch-free: the app and ``ftdyn report`` import it. A new post-hoc analysis writes its own ``show``
and needs nothing here.
"""

from __future__ import annotations

from typing import Any


def mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def barrier_shown(result: dict[str, Any]) -> dict[str, Any]:
    ends = mapping(result.get("endpoints"))
    a, b = ends.get("A"), ends.get("B")
    return {"label": f"barrier: {a} → {b}", "keys": {"A": a, "B": b}, "tables": [
        {"name": "barrier", "kind": "numbers",
         "title": "Loss barrier: max over λ of the value above the line between the endpoints",
         "values": {f"barrier_{name}": value for name, value in mapping(result.get("barriers")).items()}},
        {"name": "barrier_curve", "kind": "curve", "title": f"A = {a} → B = {b}", "x": "lambda",
         "also": {"batchnorm_reestimated": "batchnorm_reestimated"}}]}


def criticality_shown(result: dict[str, Any]) -> dict[str, Any]:
    settings = mapping(result.get("settings"))
    summary = mapping(result.get("summary"))
    constant = {"epsilon": settings.get("epsilon"), "final_train_error": result.get("final_train_error")}
    return {"label": f"criticality @ epoch {settings.get('epoch')}", "keys": {"epoch": settings.get("epoch")}, "tables": [
        {"name": "criticality_curve", "kind": "matrix",
         "title": "train error after rewinding one module to (1 − α)·θ⁰ + α·θᵀ (columns: α)",
         "row": "module", "column": "alpha", "value": "train_error"},
        {"name": "criticality", "kind": "rows", "row": "module",
         "title": "Module criticality: the smallest α whose train error is within ε of the final model's",
         "columns": ["alpha_min", "drift", "mu", "epsilon", "final_train_error"],
         "labels": {"alpha_min": "smallest α within ε", "epsilon": "ε", "mu": "μ", "drift": "‖θᵀ − θ⁰‖"},
         "values": {module: {**mapping(values), **constant} for module, values in summary.items()}}]}


STIR_LABELS = {"stir_tuned_given_source": "STIR(tuned | source)", "stir_source_given_tuned": "STIR(source | tuned)",
               "cka": "CKA"}


def invariance_shown(result: dict[str, Any]) -> dict[str, Any]:
    """Per epoch (display matrix): STIR(tuned j | source i) with the other direction and CKA; the
    diagonal summary over epochs (display curve): STIR of each layer with itself and the inversions."""
    if result.get("display") == "curve":
        errors = mapping(result.get("inversion_error"))
        seconds = mapping(result.get("inversion_seconds"))
        return {"label": "invariance: each layer with itself over epochs", "keys": {}, "tables": [
            {"name": "invariance_over_epochs", "kind": "curve", "x": "epoch",
             "title": "STIR(tuned layer i | source layer i) over epochs"},
            {"name": "invariance_inversion", "kind": "rows", "row": "layer",
             "title": "Inversions through the source: relative error ‖f(x′) − f(x)‖ / ‖f(x)‖ of the best iterate",
             "columns": ["median_error", "max_error", "seconds"],
             "labels": {"median_error": "median", "max_error": "max", "seconds": "seconds (— reused)"},
             "values": {str(layer): {"median_error": mapping(error).get("median"), "max_error": mapping(error).get("max"),
                                     "seconds": seconds.get(layer)} for layer, error in errors.items()}}]}
    cells = {"row": "source_layer", "column": "tuned_layer", "value": "stir_tuned_given_source",
             "also": {"stir_source_given_tuned": "reverse", "cka": "cka"}, "labels": STIR_LABELS}
    return {"label": f"invariance @ epoch {result.get('epoch')}", "keys": {"epoch": result.get("epoch")}, "tables": [
        {"name": "invariance", "kind": "matrix",
         "title": "STIR(tuned layer j | source layer i) — rows i (inverted through the source), columns j", **cells},
        {"name": "invariance_self", "kind": "diagonal", "title": "each layer with itself", **cells, "row": "layer"}]}


def umap_shown(result: dict[str, Any]) -> dict[str, Any]:
    k = mapping(result.get("settings")).get("k", 5)
    return {"label": f"umap: {result.get('layer')} ({result.get('features')})",
            "keys": {"layer": result.get("layer"), "features": result.get("features")}, "tables": [
                {"name": "umap", "kind": "epochs",
                 "title": f"UMAP fitted on the source: images' median move (× the source map's RMS radius; UMAP's own "
                          f"placement noise beside it) and the share whose {k} nearest neighbours have their class, on "
                          f"the map and in the features",
                 "columns": ["shift", "shift_floor", "neighbours_map", "neighbours_features"],
                 "labels": {"shift": "move (source radii)", "shift_floor": "UMAP noise",
                            "neighbours_map": f"{k}-NN class agreement: map", "neighbours_features": "features"},
                 "values": {"shift_floor": result.get("shift_floor")}},
                {"name": "umap_points", "kind": "points", "detail": True}]}


SHOWN = {"barrier": barrier_shown, "criticality": criticality_shown, "invariance": invariance_shown,
         "umap": umap_shown}


def declared_before(result: dict[str, Any]) -> dict[str, Any] | None:
    """The declaration a result file written before ``show`` existed would carry now, or None for a
    name no built-in analysis writes."""
    shown = SHOWN.get(result.get("name")) if isinstance(result.get("name"), str) else None
    return shown(result) if shown else None
