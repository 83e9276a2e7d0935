"""Post-hoc results shown from their declaration alone (engine.results): a result type nothing in ftdyn
knows, written by a throw-away module, appears in `ftdyn report` (JSON, CSV, terminal), `ftdyn figures`
and the app; each table kind is read cell by cell against the file; files written before declarations
existed read as their analysis declares them now."""

import importlib.util
import json
import textwrap

from run_factory import write_fake_run

# A post-hoc analysis written in a temporary module: it knows only the protocol (result_path,
# write_result, the declaration's vocabulary), and nothing in ftdyn knows it.
THROWAWAY = '''
import time

from engine.analyses import result_path, write_result


def run_spectrum(run_dir):
    """Singular values per layer at two epochs, with a scalar and a layer x layer matrix."""
    curve = {
        "schema": 2, "name": "spectrum", "display": "curve", "created_at": time.time(),
        "title": "singular values by rank", "x_label": "rank", "x": [1, 2, 3],
        "series": {"block0": [3.5, 1.25, 0.5], "block1": [2.0, None, 0.125]},
        "settings": {"probe_images": 9},
        "notes": ["a note the screen shows"],
        "show": {"label": "spectrum of the probe features", "keys": {"epoch": 4},
                 "tables": [{"name": "spectrum_rank", "kind": "numbers", "title": "Effective rank",
                             "values": {"effective_rank": 2.75, "top": "block0"}},
                            {"name": "spectrum_curve", "kind": "curve", "x": "rank"},
                            {"name": "spectrum_layers", "kind": "rows", "row": "layer", "title": "Per layer",
                             "values": {"block0": {"energy": 0.875}, "block1": {"energy": 0.625}}}]},
    }
    write_result(result_path(run_dir, "spectrum-e4"), curve)
    matrix = {
        "schema": 2, "name": "spectrum", "display": "matrix", "created_at": time.time() + 1,
        "title": "overlap of top directions", "rows": ["block0", "block1"], "columns": ["block0", "block1"],
        "row_label": "layer", "column_label": "layer", "values": [[1.0, 0.25], [0.375, 1.0]],
        "show": {"label": "overlap @ epoch 4", "keys": {"epoch": 4},
                 "tables": [{"name": "spectrum_overlap", "kind": "matrix", "row": "first", "column": "second",
                             "value": "overlap", "title": "overlap of top directions"}]},
    }
    write_result(result_path(run_dir, "spectrum-overlap-e4"), matrix)
'''


def throwaway_module(tmp_path):
    path = tmp_path / "throwaway_spectrum.py"
    path.write_text(textwrap.dedent(THROWAWAY))
    spec = importlib.util.spec_from_file_location("throwaway_spectrum", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def spectrum_run(tmp_path):
    run = tmp_path / "runs" / "spec_run"
    write_fake_run(run, epochs=4, layers=2, vis=False)
    throwaway_module(tmp_path).run_spectrum(run)
    return run


def test_a_result_type_nothing_knows_appears_in_the_report(tmp_path, cli):
    run = spectrum_run(tmp_path)
    result = cli("report", run, "--format", "json")
    assert result.exit_code == 0, result.output
    tables = json.loads(result.output)
    assert tables["spectrum_rank"] == [{"run": "spec_run", "epoch": 4, "effective_rank": 2.75, "top": "block0"}]
    curve = tables["spectrum_curve"]
    assert [r["rank"] for r in curve] == [1, 2, 3]
    assert [r["block0"] for r in curve] == [3.5, 1.25, 0.5] and [r["block1"] for r in curve] == [2.0, None, 0.125]
    assert {(r["layer"], r["energy"]) for r in tables["spectrum_layers"]} == {("block0", 0.875), ("block1", 0.625)}
    cells = {(r["first"], r["second"]): r["overlap"] for r in tables["spectrum_overlap"]}
    assert cells == {("block0", "block0"): 1.0, ("block0", "block1"): 0.25, ("block1", "block0"): 0.375,
                     ("block1", "block1"): 1.0}
    assert all(r["run"] == "spec_run" and r["epoch"] == 4 for r in tables["spectrum_overlap"])

    text = cli("report", run)
    assert text.exit_code == 0, text.output
    assert "Effective rank" in text.output and "2.750" in text.output and "Per layer" in text.output
    assert "overlap of top directions" in text.output and "rank" in text.output
    assert "spec_run · epoch 4: spectrum of the probe features" in " ".join(text.output.split())

    csv_text = cli("report", run, "--format", "csv").output
    assert "# spectrum_rank\nrun,epoch,effective_rank,top\nspec_run,4,2.75,block0" in csv_text


def test_a_result_type_nothing_knows_appears_in_figures_and_the_app(tmp_path, cli):
    import asyncio

    run = spectrum_run(tmp_path)
    out = tmp_path / "figures"
    result = cli("figures", run, "--out", out)
    assert result.exit_code == 0, result.output
    assert {"spectrum-spec_run-0.pdf", "spectrum-spec_run-1.pdf"} <= {p.name for p in out.iterdir()}

    from ftdyn_tui.app import create_app
    from ftdyn_tui.screens.results import ResultsScreen

    async def look():
        app = create_app([run], poll_seconds=60)
        async with app.run_test(size=(140, 44)) as pilot:
            await pilot.press("t")
            await pilot.pause()
            screen = app.screen
            assert isinstance(screen, ResultsScreen) and len(screen.results) == 2
            assert screen.query_one("#result-plot").display  # the curve
            text = str(screen.query_one("#result-text").render())
            assert "effective rank 2.750" in text and "block1: energy 0.625" in text
            assert "note: a note the screen shows" in text and "settings: probe_images 9" in text
            await pilot.press("down")
            await pilot.pause()
            assert screen.query_one("#result-matrix").display and not screen.query_one("#result-plot").display
            assert "overlap of top directions" in str(screen.query_one("#result-matrix").render())

    asyncio.run(look())


def test_each_table_kind_reads_the_file_cell_by_cell():
    from engine.results import shown_tables

    matrix = {"display": "matrix", "rows": ["a", "b"], "columns": ["a", "b", "c"],
              "values": [[1.0, 2.0, 3.0], [4.0, "x", 6.0]], "other": [[7.0, 8.0, 9.0], [10.0, 11.0]],
              "show": {"keys": {"k": 1}, "tables": [
                  {"name": "m", "kind": "matrix", "row": "r", "column": "c", "value": "v", "also": {"w": "other"}},
                  {"name": "d", "kind": "diagonal", "row": "layer", "value": "v", "also": {"w": "other"}},
                  {"name": "bad kind", "kind": "pie"}, "not a table"]}}
    m, d = shown_tables("R", matrix)
    expected = {(r, c): (matrix["values"][i][j], matrix["other"][i][j] if j < len(matrix["other"][i]) else None)
                for i, r in enumerate("ab") for j, c in enumerate("abc")}
    expected[("b", "b")] = (None, 11.0)  # not a number: no value, never an error
    assert {(row["r"], row["c"]): (row["v"], row["w"]) for row in m.rows} == expected
    assert all(row["run"] == "R" and row["k"] == 1 for row in m.rows)
    assert [(row["layer"], row["v"], row["w"]) for row in d.rows] == [("a", 1.0, 7.0), ("b", None, 11.0)]

    scatter = {"display": "scatter", "points": {"0": [[0.0, 1.0], [2.0, "y"]], "3": [[4.0, 5.0], [6.0, 7.0]]},
               "labels": [0, 1], "classes": ["cat", "dog"], "stats": {"0": {"s": 0.0}, "3": {"s": 0.5}},
               "show": {"tables": [{"name": "e", "kind": "epochs", "columns": ["s", "floor"], "values": {"floor": 0.1}},
                                   {"name": "p", "kind": "points", "detail": True}]}}
    (epochs,) = shown_tables("R", scatter)
    assert epochs.rows == [{"run": "R", "epoch": 0, "s": 0.0, "floor": 0.1}, {"run": "R", "epoch": 3, "s": 0.5, "floor": 0.1}]
    _, points = shown_tables("R", scatter, with_detail=True)
    assert [(r["epoch"], r["image"], r["class"], r["x"], r["y"]) for r in points.rows] == \
        [(0, 0, "cat", 0.0, 1.0), (3, 0, "cat", 4.0, 5.0), (3, 1, "dog", 6.0, 7.0)]


def test_results_written_before_declarations_read_as_their_analysis_declares_them():
    from engine.results import result_label, shown_tables, tables_by_name

    old_barrier = {"name": "barrier", "display": "curve", "endpoints": {"A": "run@0", "B": "run@3"},
                   "x": [0.0, 0.5, 1.0], "series": {"held_out_loss": [1.0, 1.5, 1.1]},
                   "barriers": {"held_out_loss": 0.45}, "batchnorm_reestimated": [False, True, False]}
    tables = tables_by_name(shown_tables("r", old_barrier))
    assert tables["barrier"] == [{"run": "r", "A": "run@0", "B": "run@3", "barrier_held_out_loss": 0.45}]
    assert tables["barrier_curve"][1] == {"run": "r", "A": "run@0", "B": "run@3", "lambda": 0.5,
                                          "held_out_loss": 1.5, "batchnorm_reestimated": True}
    assert result_label(old_barrier) == "barrier: run@0 → run@3"
    old_criticality = {"name": "criticality", "display": "matrix", "rows": ["layer1"], "columns": [0.0, 1.0],
                       "values": [[0.5, 0.1]], "final_train_error": 0.1,
                       "summary": {"layer1": {"alpha_min": 1.0, "drift": 2.0, "mu": None}},
                       "settings": {"epoch": 3, "epsilon": 0.05}}
    tables = tables_by_name(shown_tables("r", old_criticality))
    assert tables["criticality"] == [{"run": "r", "epoch": 3, "module": "layer1", "alpha_min": 1.0, "drift": 2.0,
                                      "mu": None, "epsilon": 0.05, "final_train_error": 0.1}]
    assert [(r["alpha"], r["train_error"]) for r in tables["criticality_curve"]] == [(0.0, 0.5), (1.0, 0.1)]
    assert tables_by_name(shown_tables("r", {"name": "unknown", "display": "curve", "x": [1]})) == {}
