"""The paper's summaries (METRICS.md §5) against straightforward computations."""

import numpy as np
import pytest

from engine.record import read_run
from engine.report import build_report, pearson
from ftdyn_tui.model import TrackedRun, correlation_rows, reusability_rows
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
