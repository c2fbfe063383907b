"""Errors a user can act on. The CLI maps them to exit codes and one-line messages."""


class EdgelesionError(Exception):
    """Bad input or usage: the message names the file or argument and what to do (exit 2)."""


class CheckFailed(Exception):
    """A check the user asked for ran and failed (exit 1)."""
