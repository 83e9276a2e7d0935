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
