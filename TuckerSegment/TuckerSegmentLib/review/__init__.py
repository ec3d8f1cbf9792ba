"""Review a `segment --compare` result in the browser: Slicer's own rendering (slicer-core via
trame-slicer) of the original and compressed segmentations side by side, a 3D view and the
agreement table. Optional (the `review` extra); nothing here is imported by the engine."""
