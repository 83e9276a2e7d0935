"""The engine's import structure: no module imports one that imports it back — at import time, inside a
function, or through the epoch parts' discovery (engine.analyses.parts imports every module of
engine.analyses) — and the parts' discovery loads nothing that reopens runs."""

import ast
import subprocess
import sys
from pathlib import Path

ENGINE = Path(__file__).resolve().parents[1] / "engine"


def engine_modules() -> dict[str, Path]:
    found = {}
    for path in ENGINE.rglob("*.py"):
        parts = path.relative_to(ENGINE.parent).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imported_names(path: Path) -> set[str]:
    """Every name ``path`` imports, at any level (module body or function): modules and module.name;
    a relative import as 'relative import from .x'."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level:
            names.add(f"relative import from {'.' * node.level}{node.module or ''}")
    return names


def imported(path: Path, modules: dict[str, Path]) -> set[str]:
    """Every engine module ``path`` imports, at any level."""
    return {name for name in imported_names(path) if name in modules}


def import_graph() -> dict[str, set[str]]:
    modules = engine_modules()
    graph = {name: imported(path, modules) for name, path in modules.items()}
    # the parts' discovery imports every module of the package (importlib, invisible to ast)
    graph["engine.analyses.parts"] |= {name for name in modules if name.startswith("engine.analyses.")}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found, counter = {}, {}, [], set(), [], [0]

    def visit(node):
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for other in graph[node]:
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                other = stack.pop()
                on_stack.discard(other)
                component.append(other)
                if other == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def test_the_cycle_finder_finds_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_engine_module_imports_one_that_imports_it_back():
    graph = import_graph()
    assert "engine.run_config" in graph["engine.training"]  # the graph sees imports
    assert cycles(graph) == []


def test_epoch_parts_are_found_without_loading_a_run_or_the_trainer():
    code = ("import sys; from engine.analyses.parts import epoch_parts; parts = epoch_parts(); "
            "assert {'distance', 'drift', 'invariance'} <= set(parts), parts; "
            "loaded = [m for m in ('engine.run_config', 'engine.run_inputs', 'engine.training', 'engine.monitor') "
            "if m in sys.modules]; assert not loaded, loaded")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ENGINE.parent)
    assert done.returncode == 0, done.stderr[-2000:]


TUI = ENGINE.parent / "ftdyn_tui"
# ftdyn_tui's modules that draw with Textual: the app, its screens, their shared widgets, the half-block
# pictures, and the command (which starts the app)
TEXTUAL_MODULES = {"__init__", "app", "widgets", "picture"}


def test_what_the_screens_show_is_computed_without_textual_or_torch():
    """The modules the screens draw from (workspace, series, filters, maps, render, host, transfer, …)
    import neither Textual nor torch, at any level, nor a screen, the app or its widgets: screens import
    them, never the reverse."""
    ui_free = [path for path in TUI.glob("*.py") if path.stem not in TEXTUAL_MODULES]
    assert {"workspace", "series", "filters", "maps", "render", "host", "transfer"} <= {p.stem for p in ui_free}
    found = {}
    for path in ui_free:
        names = imported_names(path)
        bad = sorted(name for name in names if name.split(".")[0] in ("textual", "textual_plotext", "textual_image",
                                                                      "torch", "torchvision")
                     or name.startswith(("ftdyn_tui.app", "ftdyn_tui.screens", "ftdyn_tui.widgets", "ftdyn_tui.cli",
                                         "relative import")))
        if bad:
            found[path.name] = bad
    assert not found, found
