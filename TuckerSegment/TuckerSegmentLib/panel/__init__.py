"""The Slicer panel's logic, without Qt: install plan, device choices, model size, run folders,
the background run, loading results into an MRML scene and the comparison layout.

``slicer`` (Slicer's, or slicer-core's headless MRML in the tests) is imported inside functions
only; every function takes the scene it works on. TuckerSegment.py is the thin Qt window over it.
"""
