"""``python -m TuckerSegmentLib`` runs the ``tucker-segment`` command line."""

import sys

from .cli.main import command

if __name__ == "__main__":
    sys.exit(command())
