"""The one seam to TotalSegmentator and nnU-Net: their architectures, model folders, weights,
configuration, class names and terminology, and the predictor TS builds. Every private symbol
of theirs that the project relies on is listed in private_symbols.py, with the versions it was
checked against."""
