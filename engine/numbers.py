"""How a number is shown in every table, screen and figure (torch- and numpy-free, so the command
line and the app import it without cost)."""

from __future__ import annotations


def fmt_number(value: float | None, digits: int = 3) -> str:
    """Fixed decimals; '—' where nothing was recorded."""
    return "—" if value is None else f"{value:.{digits}f}"
