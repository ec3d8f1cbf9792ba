"""Errors a user can act on: the CLI prints their message on one line and exits non-zero."""


class TuckerSegmentError(Exception):
    """A problem with the user's input, files or settings, explained in one line."""


def first_line(error: BaseException, limit: int = 200) -> str:
    """The first line of an error's message (its type's name when it has none), for messages and
    records that must stay one line."""
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:limit]
