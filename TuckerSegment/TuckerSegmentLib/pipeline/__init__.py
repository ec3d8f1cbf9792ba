"""`segment` and `compare`: TotalSegmentator's own pipeline with swapped networks, input and
output files, progress, and the agreement between two segmentations."""
