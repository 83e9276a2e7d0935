"""The one exception type the command line turns into a one-line message (no traceback)."""


class FtdynError(Exception):
    """A problem with the user's input or environment, worded as what happened and what to do."""


def exception_line(exc: BaseException, last: bool = False) -> str:
    """The first (or last) non-empty line of an exception's text, or its type where it has none: the
    part of a library's multi-line message that fits a one-line error."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return (lines[-1] if last else lines[0]) if lines else type(exc).__name__
