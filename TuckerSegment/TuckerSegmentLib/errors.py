"""Errors a user can act on: the CLI prints their message on one line and exits non-zero."""


class TuckerSegmentError(Exception):
    """A problem with the user's input, files or settings, explained in one line."""
