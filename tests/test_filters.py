"""Web filters: each rule of recipes/web_filters.yaml drops what it should, keeps good text.

Rules run through ``WebFilterStage`` exactly as in a pipeline run, on real news
articles (samples/html/newspaper4k/*.txt, the reference text of real pages) and on
documents built to fail one rule. The end-to-end test runs ``filter_web`` with the
shipped recipe over a two-shard document output: same part names, dropped
documents in the quarantine under the rule that dropped them, and counts that add up.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest
import yaml
from stages_for_tests import doc_row, output_dir, write_doc_output

from pipelines.filters import WebFilterStage, filter_web, load_recipe
from pipelines.runner import LocalRunner
from pipelines.stage import StageContext
from storage import DOC_SCHEMA, QUARANTINE_SCHEMA, read_shard

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "recipes" / "web_filters.yaml"
ARTICLES = REPO / "samples" / "html" / "newspaper4k"
GOOD = ("cnn_article", "time_001", "wired_001", "fox13now_001", "yna_co_kr")


def article(name: str) -> str:
    return (ARTICLES / f"{name}.txt").read_text(encoding="utf-8")


def recipe_with(tmp_path: Path, rule: str, **params) -> dict:
    """The shipped recipe cut down to one rule, with some parameters changed."""
    full = yaml.safe_load(RECIPE.read_text())
    (spec,) = [s for s in full["rules"] if s["rule"] == rule]
    spec["params"].update(params)
    if rule == "url_blocklist":  # list files are relative to the recipe's folder
        for key in ("domains_file", "substrings_file"):
            spec["params"][key] = str(RECIPE.parent / spec["params"][key])
    path = tmp_path / f"{rule}.yaml"
    path.write_text(yaml.safe_dump({"language": full["language"], "rules": [spec]}))
    return load_recipe(path)


def run_stage(recipe: dict, rows: list[dict]) -> tuple[list[dict], StageContext]:
    stage = WebFilterStage(rules=recipe["rules"], language=recipe["language"])
    ctx = StageContext(stage.name, "test")
    batch = pa.RecordBatch.from_pylist(rows, schema=DOC_SCHEMA)
    kept = [r for b in stage.process(iter([batch]), ctx) for r in b.to_pylist()]
    return kept, ctx


def reasons(ctx: StageContext) -> dict[str, str]:
    return {q["native_id"]: q["reason"] for q in ctx.quarantined}


def test_url_blocklist(tmp_path):
    recipe = recipe_with(tmp_path, "url_blocklist")
    rows = [doc_row(n, article("cnn_article"), i) for i, n in enumerate(["a", "b", "c", "d"])]
    rows[0]["url"] = "https://www.casino-bonus.example/news/today"  # subdomain of a listed one
    rows[1]["url"] = "https://shop.example.org/p/viagra-cheap"  # listed substring
    rows[2]["url"] = "https://spam-links.example.net/spam-links.example/"  # neither
    kept, ctx = run_stage(recipe, rows)
    assert reasons(ctx) == {"a": "url_blocklist:domain", "b": "url_blocklist:substring"}
    assert [r["native_id"] for r in kept] == ["c", "d"]
    assert "casino-bonus.example" in ctx.quarantined[0]["detail"]


def test_gopher_quality(tmp_path):
    recipe = recipe_with(tmp_path, "gopher_quality")
    words = article("cnn_article").split()[:120]
    rows = [
        doc_row("short", "The cat sat on the mat and that was all there was to it."),
        doc_row("hashes", " ".join(w + " #tag" for w in words)),
        doc_row("no_stop_words", " ".join(["quantum", "ledger", "sprocket", "meadow"] * 30)),
        doc_row("good", article("cnn_article")),
    ]
    kept, ctx = run_stage(recipe, rows)
    assert reasons(ctx) == {
        "short": "gopher_quality:short_doc",
        "hashes": "gopher_quality:hash_ratio",
        "no_stop_words": "gopher_quality:stop_words",
    }
    assert [r["native_id"] for r in kept] == ["good"]
    detail = next(q["detail"] for q in ctx.quarantined if q["native_id"] == "short")
    assert "min_doc_words=50" in detail


def test_gopher_repetition(tmp_path):
    recipe = recipe_with(tmp_path, "gopher_repetition")
    spam = "Buy the best running shoes in town today at our store.\n" * 12
    rows = [doc_row("lines", spam + article("cnn_test_nlp")), doc_row("good", article("time_001"))]
    kept, ctx = run_stage(recipe, rows)
    assert reasons(ctx)["lines"].startswith("gopher_repetition:dup_")
    assert [r["native_id"] for r in kept] == ["good"]


def test_c4_quality_drops_documents_and_removes_lines(tmp_path):
    recipe = recipe_with(tmp_path, "c4_quality")
    text = article("wired_001")
    js = "Please enable JavaScript to view the comments powered by Disqus."
    rows = [
        doc_row("lorem", text + "\nLorem ipsum dolor sit amet, consectetur adipiscing elit."),
        doc_row("curly", text + "\nThe settings object is {debug: true} in this release."),
        doc_row("few_sentences", "One short line here.\nAnother line follows it."),
        doc_row("javascript", text + "\n" + js),
    ]
    kept, ctx = run_stage(recipe, rows)
    assert reasons(ctx) == {
        "lorem": "c4_quality:lorem_ipsum",
        "curly": "c4_quality:curly_bracket",
        "few_sentences": "c4_quality:too_few_sentences",
    }
    (doc,) = kept
    assert js not in doc["text"] and text.split("\n")[0] in doc["text"]
    assert ctx.counters["c4_quality.lines_removed"] >= 1


def test_fineweb_quality(tmp_path):
    recipe = recipe_with(tmp_path, "fineweb_quality")
    menu = "\n".join(f"Section {i} of the site menu with links" for i in range(40))
    rows = [doc_row("menu", menu), doc_row("good", article("fox13now_001"))]
    kept, ctx = run_stage(recipe, rows)
    assert reasons(ctx) == {"menu": "fineweb_quality:line_punct_ratio"}
    assert [r["native_id"] for r in kept] == ["good"]


def test_recipe_controls_parameters(tmp_path):
    rows = [doc_row(name, article(name), i) for i, name in enumerate(GOOD)]
    kept, _ = run_stage(load_recipe(RECIPE), rows)
    assert [r["native_id"] for r in kept] == list(GOOD)  # real articles pass every rule

    strict = recipe_with(tmp_path, "gopher_quality", min_doc_words=100_000, max_doc_words=None)
    kept, ctx = run_stage(strict, rows)
    assert kept == []
    assert set(reasons(ctx).values()) == {"gopher_quality:short_doc"}
    assert all("min_doc_words=100000" in q["detail"] for q in ctx.quarantined)


def test_bad_recipe_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"rules": [{"rule": "gopher_qualty"}]}))
    with pytest.raises(ValueError, match="unknown rule 'gopher_qualty'"):
        load_recipe(bad)
    bad.write_text(yaml.safe_dump({"rules": [{"rule": "gopher_quality", "params": {"x": 1}}]}))
    with pytest.raises(ValueError, match="gopher_quality.*bad parameters"):
        load_recipe(bad)


def test_filter_web_end_to_end(tmp_path):
    source = output_dir(tmp_path / "text" / "web")
    good = [doc_row(name, article(name), i) for i, name in enumerate(GOOD)]
    bad = [
        doc_row("short", "Too short to be a document.", 10),
        doc_row("blocked", article("cnn_002"), 11),
        doc_row("menu", "\n".join(f"Menu entry {i} with a link" for i in range(60)), 12),
    ]
    bad[1]["url"] = "https://spam-links.example/cnn"
    write_doc_output(source, [good[:3] + bad[:1], good[3:] + bad[1:]])
    out = output_dir(tmp_path / "text" / "web_filtered")

    manifest = filter_web(LocalRunner(processes=1), source, out, RECIPE)

    assert [s.name for s in manifest.shards] == ["part-00000.parquet", "part-00001.parquet"]
    kept = [
        r
        for s in manifest.shards
        for r in read_shard(out.fs, out.shard_path(s.name[:-8])).to_pylist()
    ]
    assert sorted(r["native_id"] for r in kept) == sorted(GOOD)
    quarantined = [
        r
        for part in ("part-00000", "part-00001")
        for r in read_shard(out.fs, out.quarantine_path(part), expect=None).to_pylist()
    ]
    assert read_shard(out.fs, out.quarantine_path("part-00001")).schema.equals(QUARANTINE_SCHEMA)
    got = {r["native_id"]: r["reason"] for r in quarantined}
    # a tiny text: in FineWeb's order the repetition rule sees it first (its top 2-gram
    # is a large share of so few characters), else Gopher's word count drops it
    assert got["short"] in ("gopher_repetition:top_2_gram", "gopher_quality:short_doc")
    assert got["blocked"] == "url_blocklist:domain"
    assert got["menu"].startswith(("gopher_repetition:", "fineweb_quality:", "c4_quality:"))
    c = manifest.counters
    dropped = sum(v for k, v in c.items() if k.startswith("dropped."))
    assert c["records_in"] == len(good) + len(bad) == c["kept"] + dropped
    assert c["kept"] == c["records_out"] == len(kept)
    assert (
        dropped == len(quarantined) == sum(v for k, v in c.items() if k.startswith("quarantined."))
    )
    assert manifest.config["rules"][0]["params"]["domains_file_sha256"]


def test_a_rule_that_raises_drops_the_document_not_the_run(tmp_path):
    # without a minimum word count datatrove's Gopher rule divides by zero on empty text
    recipe = recipe_with(tmp_path, "gopher_quality", min_doc_words=None)
    rows = [doc_row("empty", " "), doc_row("good", article("yna_co_kr"))]
    with pytest.warns(RuntimeWarning):  # numpy's mean of no words, before the division
        kept, ctx = run_stage(recipe, rows)
    assert reasons(ctx) == {"empty": "gopher_quality:error"}
    assert "ZeroDivisionError" in ctx.quarantined[0]["detail"]
    assert [r["native_id"] for r in kept] == ["good"]


def test_text_rules_apply_only_to_their_languages(tmp_path):
    """English thresholds must not drop other languages: a Thai article (no spaces, so
    Gopher's word count would drop it) passes the text rules; URL rules still apply."""
    recipe = load_recipe(RECIPE)
    assert recipe["apply_to"] == ["eng_Latn"]
    thai = article("thai_article")
    rows = [
        doc_row("thai", thai, 0),
        doc_row("thai-blocked", thai, 1),
        doc_row("short-en", "Too short to be a document.", 2),
    ]
    rows[1]["url"] = "https://spam-links.example/thai"
    stage = WebFilterStage(rules=recipe["rules"], language="en", apply_to=recipe["apply_to"])
    ctx = StageContext(stage.name, "test")
    batch = pa.RecordBatch.from_pylist(rows, schema=DOC_SCHEMA)
    kept = [r["native_id"] for b in stage.process(iter([batch]), ctx) for r in b.to_pylist()]
    assert kept == ["thai"]
    got = reasons(ctx)
    assert got["thai-blocked"] == "url_blocklist:domain"
    assert got["short-en"].startswith(("gopher_", "c4_quality:", "fineweb_quality:"))
    assert ctx.counters["text_rules_skipped.tha_Thai"] == 2

    # without apply_to the same Thai article is dropped by the English rules
    everything = WebFilterStage(rules=recipe["rules"], language="en")
    ctx2 = StageContext(everything.name, "test")
    kept2 = [r for b in everything.process(iter([batch]), ctx2) for r in b.to_pylist()]
    assert "thai" not in [r["native_id"] for r in kept2]
