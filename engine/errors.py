"""The one exception type the command line turns into a one-line message (no traceback)."""


class FtdynError(Exception):
    """A problem with the user's input or environment, worded as what happened and what to do."""
