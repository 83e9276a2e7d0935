"""`ftdyn layers`: a model's hookable layers, default layers and block groups."""

from __future__ import annotations

import typer
from rich.table import Table

from ftdyn_tui.cli.common import fail, out


def layers(
    model: str = typer.Argument(..., help="A torchvision name (resnet50), timm:NAME (timm:convnext_tiny) or "
                                          "hf:PATH_OR_NAME (a save_pretrained folder or a Hugging Face Hub name)."),
    image_size: int = typer.Option(224, "--image-size", help="Input size used to compute output shapes."),
    all_modules: bool = typer.Option(False, "--all", help="Also list modules whose output is not a feature map."),
) -> None:
    """List a model's hookable layers with their output shapes; * marks the defaults."""
    from engine.errors import FtdynError
    from engine.models import architecture, check_model_name, default_layer_names, trace_layers

    try:
        check_model_name(model)
        network = architecture(model, image_size=image_size)
        traced = trace_layers(network, image_size)
    except FtdynError as exc:
        fail(str(exc))
    defaults = set(default_layer_names(model, traced, network))
    table = Table(title=f"{model} at {image_size}×{image_size} (* = default; shared modules cannot be hooked; "
                        f"h,w,c maps are permuted, a class token (+cls) is measured by the cls view, other tokens "
                        f"before the patch grid (+N) are left out)")
    for column in ("", "layer", "type", "output", "layout", "runs"):
        table.add_column(column)
    for layer in traced:
        is_map = layer.layout is not None and layer.layout.kind != "vector"
        if not all_modules and not is_map:
            continue
        table.add_row("*" if layer.name in defaults else "", layer.name, layer.kind, str(tuple(layer.shape)),
                      layout_text(layer.layout), str(layer.calls),
                      style="bold" if layer.name in defaults else ("dim" if layer.calls > 1 else None))
    out.print(table)
    from engine.strategies import block_groups

    groups = Table(title="block groups, input → output (--train-blocks; discriminative rates)")
    for column in ("group", "tensors", "first", "last"):
        groups.add_column(column)
    for name, params in block_groups(model, network).items():
        groups.add_row(name, str(len(params)), params[0], params[-1])
    out.print(groups)


def layout_text(layout) -> str:
    """How a layer's output is read: 'c,h,w'; 'h,w,c' (permuted to c,h,w); tokens on their grid (+ class token)."""
    if layout is None:
        return "not a map"
    if layout.kind == "tokens":
        where = f"tokens {layout.grid[0]}×{layout.grid[1]}" if layout.grid else "tokens"
        others = layout.prefix - int(layout.class_token)  # register or distillation tokens
        return where + (" +cls" if layout.class_token else "") + (f" +{others}" if others else "")
    return {"channels_first": "c,h,w", "channels_last": "h,w,c", "vector": "vector"}[layout.kind]
