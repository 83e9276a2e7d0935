"""What every command shares: the consoles, the one-line error, plain-text notes, list and epoch options, opening the app."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.text import Text

from engine.untrusted import MESSAGE_LIMIT, visible
from ftdyn_tui.cli.options import ImageMode


console = Console(stderr=True)
out = Console()


def fail(message: str) -> None:
    """The one-line error every bad input ends in: plain text (a path or a name from a shared run
    directory may hold markup or escape sequences), then exit status 2."""
    say("error:", "bold red", message)
    raise typer.Exit(2)


def say(label: str, style: str, message: str) -> None:
    """A 'warning:' or 'note:' line on stderr, as plain text."""
    console.print(Text.assemble((label, style), " ", visible(message, MESSAGE_LIMIT)), highlight=False, soft_wrap=True)


def split_list(values: Optional[list[str]]) -> Optional[list[str]]:
    """Options may be repeated or comma-separated: --layers a,b --layers c → [a, b, c]."""
    if not values:
        return None
    return [item.strip() for value in values for item in value.split(",") if item.strip()]


def open_tui(paths: list[Path], images: ImageMode) -> None:
    if images != ImageMode.halfcell:
        # textual-image asks the terminal what it can draw when imported: before Textual takes over.
        import textual_image.widget  # noqa: F401

    from ftdyn_tui.app import create_app

    create_app(paths, images=images.value).run()


def parse_epochs(values: Optional[list[str]]) -> Optional[list[int]]:
    items = split_list(values)
    if items is None:
        return None
    try:
        return sorted({int(item) for item in items})
    except ValueError:
        fail(f"epochs must be whole numbers, got {', '.join(items)}")
