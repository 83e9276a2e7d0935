"""What a run says while it works: an event callback ``on_event(kind, **info)`` (phases, warnings,
progress, epochs), which the command line prints and the run's event log keeps."""

from __future__ import annotations

from typing import Any, Callable

Event = Callable[..., None]


def quiet(kind: str, **info: Any) -> None:
    return None
