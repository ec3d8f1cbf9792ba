"""TuckerSegment's engine: Tucker-2 compression of TotalSegmentator's nnU-Nets.

Pure Python; never imports ``slicer`` or ``qt`` at import time.
"""

__version__ = "0.1.0"
