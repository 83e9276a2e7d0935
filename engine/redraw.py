"""`ftdyn vis`: one filter's class- and sample-based images drawn from a recorded run's checkpoints,
exactly as the run draws them (epoch 0 is the source model), into RUN/vis with its montages."""

from __future__ import annotations

from pathlib import Path

from engine.analyses.runner import EpochAnalyses
from engine.capture import feature_map_shape
from engine.checkpoints import available_checkpoints, load_checkpoint, require_checkpoints
from engine.errors import FtdynError
from engine.events import Event, quiet
from engine.models import LayerInfo
from engine.visualise import filter_visualiser
from engine.run_config import hooked_layers, saved_config
from engine.run_inputs import RunInputs, open_run
from engine.run_lock import RunLock
from engine.visualise import FilterEvidence


def visualise_from_checkpoints(run_dir: str | Path, layer: str, filter_index: int, classes: list[str] | None = None,
                               epochs: list[int] | None = None, on_event: Event = quiet) -> list[int]:
    """Draw one filter's images for ``epochs`` (default: the source and every checkpoint). Returns the
    epochs drawn."""
    run_dir = Path(run_dir)
    saved = saved_config(run_dir)
    hooked_layers(saved, [layer])
    if classes and set(classes) - set(saved["dataset"]["classes"]):
        raise FtdynError(f"unknown class {sorted(set(classes) - set(saved['dataset']['classes']))[0]!r}; the run's "
                         f"classes are {', '.join(saved['dataset']['classes'])}")
    checkpoints = available_checkpoints(run_dir)
    wanted = sorted(set(epochs) if epochs else {0, *checkpoints})
    require_checkpoints(wanted, checkpoints)
    inputs = open_run(run_dir, on_event)
    filters = inputs.layers[[entry.name for entry in inputs.layers].index(layer)]
    if not 0 <= filter_index < feature_map_shape(filters.shape, filters.layout)[0]:
        raise FtdynError(f"layer '{layer}' has no filter {filter_index}")
    lock = RunLock(run_dir)  # the images and their index are the run's: one writer, as for training
    lock.acquire(instead="draw it when the run has finished (the run draws its --vis-epochs itself)")
    try:
        draw_filter(inputs, filters, filter_index, classes, wanted, checkpoints, on_event)
    finally:
        lock.release()
    return wanted


def draw_filter(inputs: RunInputs, filters: LayerInfo, filter_index: int, classes: list[str] | None,
                wanted: list[int], checkpoints: dict[int, Path], on_event: Event) -> None:
    layer, config = filters.name, inputs.config
    images, labels = inputs.probe_pixels()
    visualiser, _ = filter_visualiser(inputs.config.out, inputs.model, inputs.layers, config.image_size, images, labels,
                                      inputs.data.classes, {"vis_filters": config.vis_filters, "vis_k": config.vis_k,
                                                            "seed": config.seed}, on_event)
    visualiser.settings.classes = classes
    visualiser.focus(layer, filter_index)
    for epoch in wanted:
        state = inputs.source.state_dict() if epoch == 0 else load_checkpoint(checkpoints[epoch], inputs.device)["model"]
        inputs.model.load_state_dict(state)
        evidence = FilterEvidence([layer], visualiser.samples)
        EpochAnalyses(inputs.source, {layer: filters.layout}, []).run(inputs.model, inputs.probe_loader,
                                                                      inputs.device, observer=evidence)
        visualiser.render(epoch, evidence, {}, redraw=True)
        on_event("phase", name=f"drew epoch {epoch}")
    visualiser.write_montages(layer, filter_index)
