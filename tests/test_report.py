"""The paper's summaries (METRICS.md §5) against straightforward computations."""

import numpy as np
import pytest

from engine.record import read_run
from engine.report import build_report, pearson
from ftdyn_tui.series import correlation_rows, reusability_rows
from ftdyn_tui.workspace import TrackedRun
from run_factory import epoch_record, write_fake_run


def test_reusability_and_correlation_match_hand_computations(tmp_path):
    write_fake_run(tmp_path / "run", epochs=6, layers=3, vis=False)
    run = read_run(tmp_path / "run")
    tables = build_report([run])
    layers = ["block0", "block1", "block2"]
    records = [epoch_record(t, layers, 12) for t in range(7)]

    def value(record, layer, measure):
        metric, view = measure.split("@")
        return record["layers"][layer][view]["values"][metric]

    for measure in ("pwsm:0.5@positions", "procrustes@filter"):
        d = [np.mean([value(r, layer, measure) for layer in layers]) for r in records[1:]]  # epochs 1…T
        row = next(r for r in tables["reusability"] if r["measure"] == measure)
        assert row["mean"] == pytest.approx(np.mean(d), abs=1e-12)
        assert row["std"] == pytest.approx(np.std(d), abs=1e-12) and row["epochs"] == 6

    pair = next(r for r in tables["correlation"] if r["measures"] == "pwsm:0.5@positions vs procrustes@filter")
    rs = [np.corrcoef([value(r, layer, "pwsm:0.5@positions") for r in records[1:]],
                      [value(r, layer, "procrustes@filter") for r in records[1:]])[0, 1] for layer in layers]
    assert pair["mean_r"] == pytest.approx(np.mean(rs), abs=1e-12)
    assert pair["std_r"] == pytest.approx(np.std(rs), abs=1e-12) and pair["layers"] == 3

    tracked = TrackedRun(tmp_path / "run")
    tracked.refresh()  # the TUI's incremental matrices give the same numbers
    reuse = dict(reusability_rows([tracked], "pwsm:0.5@positions"))
    row = next(r for r in tables["reusability"] if r["measure"] == "pwsm:0.5@positions")
    assert reuse["run"] == f"{row['mean']:.3f} ± {row['std']:.3f}"
    assert any(r[1] == f"{pair['mean_r']:.2f} ± {pair['std_r']:.2f}" for r in correlation_rows([tracked]))


def test_pearson_properties():
    x = [1.0, 2.0, 4.0, 3.0]
    assert pearson(x, x) == pytest.approx(1.0)
    assert pearson(x, [-v for v in x]) == pytest.approx(-1.0)
    assert pearson(x, [2 * v + 7 for v in x]) == pytest.approx(1.0)  # invariant to affine maps
    assert pearson(x, [1.0, 1.0, 1.0, 1.0]) is None and pearson([1.0], [2.0]) is None
    assert pearson(x, [0.3, -1.0, 2.0, 0.1]) == pytest.approx(np.corrcoef(x, [0.3, -1.0, 2.0, 0.1])[0, 1])


def test_report_writes_one_csv_per_table_that_reads_back_as_the_table(tmp_path, cli):
    import csv
    import json

    write_fake_run(tmp_path / "runs" / "a", epochs=3, layers=2, vis=False)
    write_fake_run(tmp_path / "runs" / "b", epochs=2, layers=2, vis=False)
    tables = build_report([read_run(tmp_path / "runs" / name) for name in ("a", "b")])
    result = cli("report", tmp_path / "runs", "--format", "csv", "--out", tmp_path / "csv")
    assert result.exit_code == 0, result.output
    written = sorted(p.stem for p in (tmp_path / "csv").glob("*.csv"))
    assert written == sorted(tables)
    for name, rows in tables.items():
        with open(tmp_path / "csv" / f"{name}.csv", newline="") as f:
            read = list(csv.DictReader(f))
        assert len(read) == len(rows), name  # a header row, then one line per row: no '# name' lines
        for got, row in zip(read, rows):
            assert list(got) == list(dict.fromkeys(k for r in rows for k in r))
            for key, value in row.items():
                expected = json.dumps(value) if isinstance(value, (dict, list)) else "" if value is None else str(value)
                assert got[key] == expected, (name, key)
    assert cli("report", tmp_path / "runs", "--format", "json", "--out", tmp_path / "js").exit_code == 0
    assert json.loads((tmp_path / "js" / "report.json").read_text()) == json.loads(json.dumps(tables))
    refused = cli("report", tmp_path / "runs", "--out", tmp_path / "x")
    assert refused.exit_code == 2 and "--format csv" in refused.output and not (tmp_path / "x").exists()


def shifted_replicates(run_dir, estimate: bool):
    """The run's positions replicates moved off-centre by 0.01 (their mean no longer the plug-in value),
    and with ``estimate`` the run recorded as a new one: estimates G·d − (G−1)·mean d₍g₎ and intervals
    around them, its settings saying so. Returns the rewritten records."""
    import json

    from engine.intervals import estimate as jackknife

    records = [json.loads(line) for line in (run_dir / "records.jsonl").read_text().splitlines()]
    config = json.loads((run_dir / "config.json").read_text())
    settings = config["analyses"][0]["intervals"]
    for record in records:
        for entry in record["layers"].values():
            positions = entry["positions"]
            positions["jackknife"] = {m: [r + 0.01 for r in reps] for m, reps in positions["jackknife"].items()}
            if estimate:
                found = {m: jackknife(positions["values"][m], reps, settings["t"], corrected=True)
                         for m, reps in positions["jackknife"].items()}
                positions["estimate"] = {m: e.value for m, e in found.items()}
                positions["interval"] = {m: [e.low, e.high] for m, e in found.items()}
    if estimate:
        settings["estimate"] = "bias-corrected"
        (run_dir / "config.json").write_text(json.dumps(config))
    (run_dir / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return records


@pytest.mark.parametrize("recorded_estimate", [False, True])
def test_reports_show_what_the_run_recorded_plug_in_before_bias_corrected_now(tmp_path, recorded_estimate):
    """A run recorded before bias correction reads as it was: plug-in values, its recorded intervals,
    statistics uncorrected. A run recorded now shows the corrected estimate, with every statistic of
    it (a mean over layers and epochs, a paired difference) corrected by hand the same way."""
    write_fake_run(tmp_path / "run", epochs=4, layers=3, vis=False, intervals=True)
    records = shifted_replicates(tmp_path / "run", recorded_estimate)
    tables = build_report([read_run(tmp_path / "run")])
    measure, groups = "pwsm:0.5@positions", 5
    layers = ["block0", "block1", "block2"]
    plug = np.array([[r["layers"][layer]["positions"]["values"]["pwsm:0.5"] for layer in layers] for r in records])
    reps = np.array([[r["layers"][layer]["positions"]["jackknife"]["pwsm:0.5"] for layer in layers] for r in records])
    corrected = groups * plug - (groups - 1) * reps.mean(-1) if recorded_estimate else plug
    shown = {(row["layer"], row["epoch"]): row for row in tables["layers"] if row["measure"] == measure}
    for i, record in enumerate(records):
        for j, layer in enumerate(layers):
            row = shown[(layer, record["epoch"])]
            assert row["value"] == pytest.approx(corrected[i, j], abs=1e-12)
            assert [row["low"], row["high"]] == pytest.approx(record["layers"][layer]["positions"]["interval"]["pwsm:0.5"])
            assert row["estimate"] == ("bias-corrected" if recorded_estimate else "plug-in")
    reuse = next(r for r in tables["reusability"] if r["measure"] == measure)
    assert reuse["mean"] == pytest.approx(corrected[1:].mean(), abs=1e-12)
    # the interval of the mean: the mean inside each replicate, corrected as a statistic of its own
    mean_reps = reps[1:].mean((0, 1))
    by_hand = groups * plug[1:].mean() - (groups - 1) * mean_reps.mean() if recorded_estimate else plug[1:].mean()
    assert (reuse["low"] + reuse["high"]) / 2 == pytest.approx(by_hand, abs=1e-12)
    change = next(r for r in tables["changes"] if r["measure"] == measure and r["layer"] == "block1")
    assert change["difference"] == pytest.approx(corrected[-1, 1] - corrected[-2, 1], abs=1e-12)
