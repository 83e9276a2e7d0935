"""Everything a user is pointed to lives in the repository."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_document_the_readme_and_help_name_exists():
    from ftdyn_tui.cli import app

    texts = [(ROOT / "README.md").read_text(), app.info.help]
    named = {m for text in texts for m in re.findall(r"\b(?:docs/)?[A-Z][A-Z-]+\.md\b", text)}
    assert {"docs/METRICS.md", "docs/ANALYSES.md", "docs/RUN-DIRECTORY.md"} <= named
    missing = [name for name in named if not (ROOT / name).is_file() and not (ROOT / "docs" / name).is_file()]
    assert not missing, f"named but not in the repository: {missing}"


def test_the_readme_picture_of_the_app_is_the_current_snapshot():
    """docs/app-curves.svg is the 160×48 overlay snapshot: when the app changes and the snapshot is
    updated (`pytest --snapshot-update`), copy it over so the README shows the app as it is."""
    snapshot = ROOT / "tests" / "__snapshots__" / "test_tui" / "test_snapshot_demo_overlay[160x48].svg"
    assert "docs/app-curves.svg" in (ROOT / "README.md").read_text()
    assert (ROOT / "docs" / "app-curves.svg").read_bytes() == snapshot.read_bytes(), \
        "cp 'tests/__snapshots__/test_tui/test_snapshot_demo_overlay[160x48].svg' docs/app-curves.svg"
