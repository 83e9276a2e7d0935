"""Receptive fields (two independent methods) and the per-filter visualisations."""

import io

import numpy as np
import pytest
import torchvision
from PIL import Image

from conftest import TINY_RUN
from engine.receptive import LayerFields, ReceptiveField, receptive_field_by_gradient, receptive_fields
from engine.record import read_run, read_vis_index
from engine.visualise import PAD_COLOUR, class_average, jet, overlay, png_bytes

VGG19_KNOWN = {"features.3": 5, "features.8": 14, "features.17": 48, "features.26": 116, "features.35": 252}


def test_vgg19_receptive_fields_known_values_by_both_methods():
    model = torchvision.models.vgg19(weights=None)
    analytic = receptive_fields(model, list(VGG19_KNOWN))
    for layer, size in VGG19_KNOWN.items():
        field = analytic[layer].for_filter(0)
        assert field.size == (size, size), layer
        assert receptive_field_by_gradient(model, layer) == field, layer


def test_resnet50_fields_include_the_downsample_shortcuts():
    model = torchvision.models.resnet50(weights=None)
    layers = ["relu", "layer1.2", "layer2.3", "layer3.5", "layer4.2"]
    analytic = receptive_fields(model, layers)
    assert [analytic[layer].for_filter(0).size[0] for layer in layers] == [7, 35, 91, 267, 427]
    assert [analytic[layer].for_filter(0).stride[0] for layer in layers] == [2, 4, 8, 16, 32]
    for layer in layers[:4]:
        assert receptive_field_by_gradient(model, layer) == analytic[layer].for_filter(0), layer


def test_densenet121_concatenated_channels_have_their_own_fields():
    model = torchvision.models.densenet121(weights=None)
    layers = ["features.denseblock1.denselayer6.relu2", "features.transition1.relu", "features.transition2.relu"]
    analytic = receptive_fields(model, layers)
    transition = analytic["features.transition1.relu"]
    assert len(transition.segments) == 7  # the stem's 64 channels, then 6 layers × 32
    assert transition.for_filter(0).size == (11, 11) and transition.for_filter(255).size == (59, 59)
    for layer in layers:
        fields = analytic[layer]
        for channel in {0, fields.segments[-1][0], fields.segments[-1][1] - 1}:
            assert receptive_field_by_gradient(model, layer, channel) == fields.for_filter(channel), (layer, channel)


def one_field(size, stride=1, offset=0) -> LayerFields:
    return LayerFields(((0, 1 << 20, ReceptiveField((size, size), (stride, stride), (offset, offset))),))


def test_class_average_is_the_activation_weighted_mean_of_crops():
    images = np.zeros((3, 8, 8, 3), dtype=np.uint8)
    images[0, 2:5, 2:5] = [255, 0, 0]  # red square under image 0's peak
    images[1, :, :] = [0, 0, 200]       # image 1 all blue
    images[2, :, :] = [0, 255, 0]       # image 2 never fires (negative peak): no weight
    fields = one_field(size=3, stride=2, offset=-1)  # unit (i, j) sees rows [2i−1, 2i+2)
    locations = np.array([[[1, 1]], [[0, 0]], [[2, 2]]])[:, 0]
    peaks = np.array([3.0, 1.0, -2.0])
    average = class_average(images, locations, peaks, fields, 0)
    crop1 = np.zeros((3, 3, 3))
    crop1[:] = PAD_COLOUR  # unit (0, 0) reaches one pixel outside the image
    crop1[1:, 1:] = [0, 0, 200]
    crop0 = np.asarray(images[0, 1:4, 1:4], dtype=float)  # unit (1, 1): rows and columns 1..3, inside
    expected = (3.0 * crop0 + 1.0 * crop1) / 4.0
    np.testing.assert_allclose(average, expected)
    assert class_average(images[2:], locations[2:], peaks[2:], fields, 0) is None


def test_red_stays_red_through_crops_overlays_and_png():
    red = np.zeros((16, 16, 3), dtype=np.uint8)
    red[..., 0] = 255
    average = class_average(red[None], np.array([[8, 8]]), np.array([1.0]), one_field(5), 0)
    assert (average == [255, 0, 0]).all()
    decoded = np.asarray(Image.open(io.BytesIO(png_bytes(average))))
    assert (decoded == [255, 0, 0]).all()
    blended = overlay(red, np.zeros((4, 4)), scale=1.0)
    assert (blended[..., 0] > blended[..., 2]).all() and (blended[..., 1] == 0).all()
    assert tuple(jet(np.array([1.0]))[0]) == (128, 0, 0) and tuple(jet(np.array([0.0]))[0]) == (0, 0, 128)


def test_overlay_uses_the_given_scale_so_epochs_compare():
    image = np.full((8, 8, 3), 128, dtype=np.uint8)
    source_map = np.full((2, 2), 1.0)
    same = overlay(image, source_map, scale=1.0)
    doubled = overlay(image, 2 * source_map, scale=1.0)
    halved = overlay(image, 0.5 * source_map, scale=1.0)
    assert (same == doubled).all()  # beyond the source's range: saturated, not rescaled
    assert not (same == halved).all()
    assert not (overlay(image, 0.5 * source_map, scale=0.5) == halved).all()


def test_run_draws_default_filters_every_epoch_and_vis_reproduces_one(tmp_path, shapes_data, cli):
    run_dir = tmp_path / "run"
    result = cli("run", "--data", shapes_data, "--out", run_dir, "--epochs", "2", *TINY_RUN,
                 "--vis", "--save-every-epoch", "--vis-k", "2", "--vis-filters", "layer2.1:7",
                 "--metrics", "pwsm,procrustes@filter")
    assert result.exit_code == 0, result.output
    index = read_vis_index(run_dir)
    layers = [layer["name"] for layer in read_run(run_dir).config["layers"]]
    for layer in layers:
        entries = [e for e in index if e["layer"] == layer]
        kinds = {(e["kind"], e["epoch"]) for e in entries}
        assert kinds >= {(kind, epoch) for kind in ("class", "sample") for epoch in (0, 1, 2)}, layer
        reasons = {e["chosen_by"] for e in entries}
        assert {"random", "top-change"} <= reasons, (layer, reasons)
    assert any(e["layer"] == "layer2.1" and e["filter"] == 7 and e["chosen_by"] == "named" for e in index)
    for entry in index:
        with Image.open(run_dir / "vis" / entry["path"]) as image:
            image.verify()
    scales = {}
    for entry in (e for e in index if e["kind"] == "sample"):
        scales.setdefault((entry["layer"], entry["filter"], entry["image"]), set()).add(tuple(entry["scale"]))
    assert all(len(s) == 1 for s in scales.values())  # one colour scale across epochs
    records = read_run(run_dir).epochs
    assert all(r["timing"]["vis_s"] > 0 for r in records)

    target = run_dir / "vis" / "layer2.1" / "f0007" / "sample-0000-e001.png"
    original = target.read_bytes()
    target.unlink()
    drawn = cli("vis", run_dir, "--layer", "layer2.1", "--filter", "7", "--epochs", "0,1")
    assert drawn.exit_code == 0, drawn.output
    assert target.read_bytes() == original
    assert (target.parent / "montage-class.png").exists()
    before = len(read_vis_index(run_dir))
    assert cli("vis", run_dir, "--layer", "layer2.1", "--filter", "7").exit_code == 0
    assert len(read_vis_index(run_dir)) == before  # redrawing lists nothing twice


def test_vis_command_errors(tmp_path, shapes_data, cli):
    run_dir = tmp_path / "run"
    assert cli("run", "--data", shapes_data, "--out", run_dir, "--epochs", "1", *TINY_RUN, "--no-vis").exit_code == 0
    assert not (run_dir / "vis").exists()
    for args, fragment in ((("--layer", "layer9", "--filter", "0"), "was not hooked"),
                           (("--layer", "relu", "--filter", "999"), "no filter 999"),
                           (("--layer", "relu", "--filter", "0", "--epochs", "5"), "no checkpoint for epoch 5"),
                           (("--layer", "relu", "--filter", "0", "--class", "dragon"), "unknown class")):
        result = cli("vis", run_dir, *args)
        assert result.exit_code == 2 and fragment in result.output, result.output
    assert cli("run", "--data", shapes_data, "--out", tmp_path / "r2", "--epochs", "1", *TINY_RUN, "--vis",
               "--vis-filters", "relu:999").exit_code == 2


def test_class_images_show_the_part_of_a_deep_field_inside_the_image_with_its_contrast_stretched():
    from engine.visualise import in_image_extent, legible

    images = np.full((2, 16, 16, 3), 120, dtype=np.uint8)
    images[:, 4:8, 4:8] = 132  # faint structure: 12 grey levels in a flat image
    field = one_field(size=48, stride=16, offset=-16)  # a deep layer: 3× the image
    locations, peaks = np.array([[0, 0], [0, 0]]), np.array([1.0, 2.0])
    average = class_average(images, locations, peaks, field, 0)
    assert average.shape == (48, 48, 3) and (average[0, 0] == PAD_COLOUR).all()  # mostly padding
    extent = in_image_extent(images.shape[1:3], locations, peaks, field.for_filter(0))
    assert extent == (16, 32, 16, 32)  # rows/columns 16..31 of the field are the image
    shown = legible(average, extent)
    assert shown.shape == (16, 16, 3) and not (shown == PAD_COLOUR).all(axis=-1).any()
    assert shown.min() == 0 and shown.max() == 255  # the faint square spans the full range
    np.testing.assert_array_equal(shown[4:8, 4:8], 255)
    assert in_image_extent(images.shape[1:3], locations, -peaks, field.for_filter(0)) is None  # never fired
    flat = np.full((4, 4, 3), 99.0)
    np.testing.assert_array_equal(legible(flat, None), flat)  # nothing to stretch: left as it is
