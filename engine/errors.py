"""The one exception type the command line turns into a one-line message (no traceback)."""


class FtdynError(Exception):
    """A problem with the user's input or environment, worded as what happened and what to do."""


def exception_line(exc: BaseException, last: bool = False) -> str:
    """The first (or last) non-empty line of an exception's text, or its type where it has none: the
    part of a library's multi-line message that fits a one-line error."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return (lines[-1] if last else lines[0]) if lines else type(exc).__name__


class Stopped(KeyboardInterrupt):
    """A run stopped by a signal (Ctrl-C's SIGINT, or SIGTERM from ``kill``, a scheduler or ``docker
    stop``): a KeyboardInterrupt that remembers which, so the command exits with 128 + its number as a
    shell does (130 for Ctrl-C, 143 for SIGTERM) and a scheduler can tell a kill from a Ctrl-C."""

    def __init__(self, signal_name: str = "SIGINT"):
        super().__init__(signal_name)
        self.signal_name = signal_name


def stop_exit_code(exc: BaseException) -> int:
    """The exit code after ``exc`` stopped a command: 128 + the signal's number, SIGINT's (130) for a
    plain KeyboardInterrupt."""
    import signal

    name = getattr(exc, "signal_name", "SIGINT")
    return 128 + int(getattr(signal.Signals, name, signal.SIGINT))
