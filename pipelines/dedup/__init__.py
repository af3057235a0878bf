"""Deduplication: exact (normalised-text hash) here; MinHash fuzzy dedup later."""
