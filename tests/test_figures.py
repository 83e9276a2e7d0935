"""`ftdyn figures`: every figure and table of a set of runs is written and opens."""

import csv
import json
import xml.etree.ElementTree as ElementTree

import pytest
from PIL import Image

from run_factory import write_fake_run


def add_drift_and_results(run):
    """Parameter drift recorded every epoch, and a barrier and a criticality result, as the engine writes them."""
    config = json.loads((run / "config.json").read_text())
    config["analyses"].append({"name": "drift", "when": "epoch", "section": "drift", "display": "series",
                               "title": "parameter drift", "unit": "L2 norm", "measures": ["relative@groups"],
                               "rows": {"groups": ["layer1", "layer2"]}})
    (run / "config.json").write_text(json.dumps(config))
    records = [json.loads(line) for line in (run / "records.jsonl").read_text().splitlines()]
    for record in records:
        record["drift"] = {"groups": {"relative": {"layer1": 0.01 * record["epoch"], "layer2": 0.02 * record["epoch"]}}}
    (run / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (run / "analyses").mkdir()
    (run / "analyses" / "barrier-a.json").write_text(json.dumps({
        "name": "barrier", "display": "curve", "created_at": 1.0, "x": [0.0, 0.5, 1.0],
        "series": {"train_loss": [0.1, 0.9, 0.2], "held_out_loss": [0.3, 1.2, 0.4]}}))
    (run / "analyses" / "criticality-a.json").write_text(json.dumps({
        "name": "criticality", "display": "matrix", "created_at": 2.0, "rows": ["layer1", "layer2"],
        "columns": [0.0, 0.5, 1.0], "values": [[0.1, 0.2, 0.3], [0.1, 0.5, 0.9]]}))


@pytest.fixture()
def runs(tmp_path):
    write_fake_run(tmp_path / "runs" / "alpha_run", intervals=True)  # feature distances with intervals
    add_drift_and_results(tmp_path / "runs" / "alpha_run")
    write_fake_run(tmp_path / "runs" / "beta", model="vit_b_16", vis=False)
    montage = tmp_path / "runs" / "alpha_run" / "vis" / "block0" / "f0003"
    montage.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (40, 20), (200, 30, 30)).save(montage / "montage-class.png")
    (tmp_path / "runs" / "alpha_run" / "vis" / "block0" / "f0004").mkdir()
    (tmp_path / "runs" / "alpha_run" / "vis" / "block0" / "f0004" / "montage-sample.png").symlink_to("/etc/passwd")
    return tmp_path / "runs"


@pytest.mark.parametrize("fmt", ["png", "pdf", "svg"])
def test_every_figure_and_table_is_written_and_opens(runs, tmp_path, cli, fmt):
    out = tmp_path / "figures"
    result = cli("figures", runs / "alpha_run", runs / "beta", "--out", out, "--format", fmt)
    assert result.exit_code == 0, result.output
    names = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    curves = [n for n in names if n.startswith("distance-")]
    assert curves == sorted(f"distance-{m}.{fmt}" for m in ("pwsm0.5_positions", "procrustes_positions",
                                                              "procrustes_filter"))
    assert {"table1.tex", "table1.csv", "table2.tex", "table2.csv"} <= set(names)
    assert {f"drift-relative_groups-alpha_run.{fmt}", f"barrier-alpha_run-0.{fmt}",
            f"criticality-alpha_run-1.{fmt}"} <= set(names)
    assert names.count("montages/alpha_run/block0-f0003-class.png") == 1
    assert not any("f0004" in n for n in names)  # a link out of the run is not followed
    for name in curves:
        path = out / name
        if fmt == "png":
            with Image.open(path) as image:
                width, height = image.size
                assert image.format == "PNG" and 600 < width <= 2 * 3.3 * 300 + 200 and height > 300
        elif fmt == "pdf":
            assert path.read_bytes().startswith(b"%PDF") and b"%%EOF" in path.read_bytes()[-64:]
        else:
            root = ElementTree.parse(path).getroot()
            assert root.tag.endswith("svg") and "epoch" in path.read_text()  # text stays text
    rows = list(csv.reader((out / "table2.csv").open()))
    assert rows[0][:3] == ["run", "measure", "reusability (mean ± std over epochs)"]
    alpha = next(r for r in rows if r[0] == "alpha_run" and r[1] == "pwsm:0.5@positions")
    assert alpha[3].startswith("[") and next(r for r in rows if r[0] == "beta")[3] == "—"  # beta: no intervals
    tex = (out / "table2.tex").read_text()
    assert r"\begin{tabular}" in tex and r"alpha\_run" in tex and r"$\pm$" in tex and "90% interval" not in tex


def test_latex_cells_escape_what_a_run_directory_may_hold():
    from engine.figures import latex

    assert latex("a_b & 50% {x}$#~^\\") == r"a\_b \& 50\% \{x\}\$\#\textasciitilde{}\textasciicircum{}\textbackslash{}"
    assert "\x1b" not in latex("evil\x1b[31m")


def test_figures_refuses_what_it_cannot_draw(tmp_path, cli):
    missing = cli("figures", tmp_path / "nothing", "--out", tmp_path / "out")
    assert missing.exit_code == 2 and "does not exist" in missing.output
    (tmp_path / "empty").mkdir()
    empty = cli("figures", tmp_path / "empty", "--out", tmp_path / "out")
    assert empty.exit_code == 2 and "no ftdyn run found" in empty.output
