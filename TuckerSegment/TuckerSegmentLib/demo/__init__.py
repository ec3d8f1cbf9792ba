"""The offline demo: synthetic CT phantoms, the side-by-side picture, and the small
phantom-trained models it runs (``demo/models``, in TotalSegmentator's weights layout)."""
