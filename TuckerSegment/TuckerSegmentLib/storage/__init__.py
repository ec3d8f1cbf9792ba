"""Compressed models on disk: the format (weights + manifest), decomposing a model folder into
it, and the cache keyed by checkpoint hash and settings."""
