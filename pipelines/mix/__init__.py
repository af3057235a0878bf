"""Mixing: recipes (recipe.py), the label scan (scan.py), per-stage selection (select.py)
and the feed into the exporter plus asset metadata (feed.py)."""
