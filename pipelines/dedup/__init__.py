"""Deduplication: exact (normalised-text hash) and fuzzy (MinHash LSH, FineWeb parameters)."""
