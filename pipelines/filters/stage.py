"""Stage ``text/web_filtered``: the rules of a filter recipe applied to document shards.

    filter_web(runner, source=store.output("text/web"), out=store.output("text/web_filtered"),
               recipe_path="recipes/web_filters.yaml") -> Manifest

One task per source shard, same part names. Each document goes through the recipe's
rules in order; the first rule that drops it decides, and the document goes to the
part's quarantine shard with reason ``<rule>:<code>`` and a detail naming the failing
parameter. Kept documents are written with their text as the rules left it (the C4
rule removes lines, as in FineWeb). Counters: ``records_in``, ``kept``,
``dropped.<rule>`` and ``quarantined.<rule>:<code>``, so
``records_in == kept + sum(dropped.*)``; ``c4_quality.lines_removed`` counts lines the
C4 rule took out of documents it kept. A rule that raises on a document drops it as
``<rule>:error`` with the exception, and the run goes on.

The recipe is loaded once in the driver (``load_recipe``): list files are resolved
against the recipe's folder and their sha256 goes into the stage config, so editing
a threshold or a list reruns the stage, and nothing else does.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import pyarrow as pa
import yaml

from classifiers.lid.stage import LidStage
from pipelines.filters.rules import build_rule, file_digest
from pipelines.runner import LocalRunner
from pipelines.stage import Stage, StageContext
from storage.layout import OutputDir
from storage.manifest import Manifest
from storage.schema import DOC_SCHEMA

LIST_FILES = ("domains_file", "substrings_file")


def load_recipe(path: str | Path) -> dict[str, Any]:
    """Read a filter recipe: ``{"language": str, "rules": [{"rule": name, "params": {...}}]}``."""
    path = Path(path).resolve()
    try:
        recipe = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"cannot read filter recipe {path}: {exc}") from exc
    if not isinstance(recipe, dict) or not isinstance(recipe.get("rules"), list):
        raise ValueError(
            f"filter recipe {path} needs a 'rules' list (see recipes/web_filters.yaml)"
        )
    rules = []
    for spec in recipe["rules"]:
        params = dict(spec.get("params") or {})
        for key in LIST_FILES:
            if params.get(key):
                resolved = (path.parent / params[key]).resolve()
                if not resolved.is_file():
                    raise ValueError(f"filter recipe {path}: {key} {resolved} does not exist")
                params[key] = str(resolved)
                params[f"{key}_sha256"] = file_digest(str(resolved))
        rules.append({"rule": spec.get("rule"), "params": params})
    language = recipe.get("language", "en")
    for spec in rules:  # fail in the driver, with the rule named, not in every worker
        build_rule(spec, language)
    apply_to = list(recipe.get("apply_to", []))
    return {"language": language, "rules": rules, "apply_to": apply_to}


URL_RULES = ("url_blocklist",)  # rules that hold for every language


@dataclass
class WebFilterStage(Stage):
    name: ClassVar[str] = "text/web_filtered"
    version: ClassVar[str] = "1"
    output_schema: ClassVar[pa.Schema] = DOC_SCHEMA

    rules: list[dict[str, Any]] = field(default_factory=list)
    language: str = "en"
    # canonical language codes the text rules are tuned for; documents identified as
    # another language get the URL rules only (empty: every document gets every rule)
    apply_to: list[str] = field(default_factory=list)

    def process(
        self, batches: Iterator[pa.RecordBatch], ctx: StageContext
    ) -> Iterator[pa.RecordBatch]:
        rules = [build_rule(spec, self.language) for spec in self.rules]
        url_rules = [r for r in rules if r.name in URL_RULES]
        identify = LidStage(second_stage="").identifier().identify if self.apply_to else None
        row = 0
        for batch in batches:
            kept = []
            docs = batch.to_pylist()
            langs = identify([d["text"] for d in docs]).lang if identify else None
            for i, doc in enumerate(docs):
                ctx.counters["records_in"] += 1
                applied = rules
                if langs is not None and langs[i] not in self.apply_to:
                    applied = url_rules
                    ctx.counters[f"text_rules_skipped.{langs[i]}"] += 1
                if self._keep(doc, row, applied, ctx):
                    kept.append(doc)
                row += 1
            ctx.counters["kept"] += len(kept)
            if kept:
                yield pa.RecordBatch.from_pylist(kept, schema=DOC_SCHEMA)

    def _keep(self, doc: dict[str, Any], row: int, rules, ctx: StageContext) -> bool:
        for rule in rules:
            lines = doc["text"].count("\n")
            try:
                drop = rule.check(doc)
            except Exception as exc:  # a rule must not end the run: drop and report
                reason, detail = f"{rule.name}:error", repr(exc)
            else:
                if drop is None:
                    removed = lines - doc["text"].count("\n")
                    if removed > 0:
                        ctx.counters[f"{rule.name}.lines_removed"] += removed
                    continue
                reason, detail = f"{rule.name}:{drop.code}", drop.detail
            ctx.counters[f"dropped.{rule.name}"] += 1
            ctx.quarantine(
                reason,
                detail,
                offset=row,
                native_id=doc["native_id"],
                url=doc.get("url"),
                excerpt=doc["text"].encode("utf-8", "replace"),
            )
            return False
        return True


def filter_web(
    runner: LocalRunner,
    source: OutputDir,
    out: OutputDir,
    recipe_path: str | Path,
    progress: Callable[[str], None] | None = None,
) -> Manifest:
    """Filter the documents of ``source`` into ``out`` (same part names) by a recipe."""
    recipe = load_recipe(recipe_path)
    stage = WebFilterStage(
        rules=recipe["rules"], language=recipe["language"], apply_to=recipe["apply_to"]
    )
    return runner.run_over(stage, source, out, progress=progress)
