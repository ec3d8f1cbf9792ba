"""``python -m TuckerSegmentLib`` runs the ``tucker-segment`` command line."""

import sys

from .cli.main import tucker_segment

if __name__ == "__main__":
    sys.exit(tucker_segment())
