"""Document filters configured by recipes: URL blocklists and FineWeb's quality heuristics.

rules.py holds the rules, stage.py the ``WebFilterStage`` that applies a recipe
(recipes/web_filters.yaml) to document shards and ``filter_web``, the whole step.
"""

from pipelines.filters.stage import WebFilterStage, filter_web, load_recipe

__all__ = ["WebFilterStage", "filter_web", "load_recipe"]
