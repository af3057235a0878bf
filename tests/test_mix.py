"""The mixer: recipe validation, instance-level repeats, thresholds, S3 length shares, export.

Every test builds a small store in tmp_path: a document output and attribute outputs
written with the real schemas of the taggers (domain, quality, safety, language ID,
MinHash clusters), with text taken from samples/text/udhr_paragraphs.jsonl (UDHR
paragraphs in 532 translations), so token counts come from the real Qwen3 tokenizer.
"""

from __future__ import annotations

import copy
import json
import random
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from test_indexed import read_megatron

from classifiers.lid.stage import LID_SCHEMA
from classifiers.taggers import DomainTagger, QualityTagger, SafetyTagger
from pipelines.dedup.minhash import ATTRIBUTE_SCHEMA as CLUSTER_SCHEMA
from pipelines.mix.feed import mix_metadata, stage_documents
from pipelines.mix.recipe import (
    RECIPE_PATH,
    UNKNOWN,
    RecipeError,
    StageRecipe,
    load_recipe,
    parse_recipe,
)
from pipelines.mix.scan import LABEL_COLUMNS, SCAN_SCHEMA, scan_corpus
from pipelines.mix.select import judge_batch, length_bucket, mix_stage, uniform
from pipelines.runner import LocalRunner, StageFailed
from pipelines.tokens.export import export_stage
from pipelines.tokens.tokenizer import Tokenizer, qwen3
from storage.layout import CorpusStore
from storage.manifest import Manifest, ManifestError
from storage.schema import DOC_SCHEMA
from storage.shards import read_shard, write_shard

UDHR = Path(__file__).resolve().parent.parent / "samples" / "text" / "udhr_paragraphs.jsonl"
RUNNER = LocalRunner(processes=1)
ATTRS = {
    "lang": "attributes/lang/web",
    "domain": "attributes/domain/web",
    "quality": "attributes/quality/web",
    "safety": "attributes/safety/web",
    "cluster": "attributes/web_minhash",
}


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    return qwen3()


@pytest.fixture(scope="module")
def paragraphs(tok: Tokenizer) -> list[tuple[str, int]]:
    rows = [json.loads(line) for line in UDHR.read_text(encoding="utf-8").splitlines()]
    return [(r["text"], len(tok.encode(r["text"]))) for r in rows]


def text_of(paragraphs, tokens: int, rng: random.Random) -> str:
    """Paragraphs joined until about ``tokens`` tokens (the scan measures exactly)."""
    out, n, i = [], 0, rng.randrange(len(paragraphs))
    while n < tokens:
        text, k = paragraphs[i % len(paragraphs)]
        out.append(text)
        n += k + 1
        i += 1
    return "\n\n".join(out)


def doc(i: int, text: str, **labels) -> dict:
    row = {"doc_id": f"d{i:05d}", "text": text, "lang": "eng_Latn", "lang_score": 0.9}
    row.update(domain="news", edu_score=2.0, flags=[], cluster_size=1)
    row.update(labels)
    return row


def write_output(corpus: CorpusStore, key: str, parts: list[list[dict]], schema, fill) -> None:
    out = corpus.output(key)
    shards = []
    for p, rows in enumerate(parts):
        table = pa.Table.from_pylist([fill(r) for r in rows], schema=schema)
        shards.append(write_shard(out.fs, out.shard_path(f"part-{p:05d}"), table, schema))
    out.write_manifest(Manifest(stage=key, version="1", config={}, shards=shards))


def make_store(root: Path, parts: list[list[dict]]) -> CorpusStore:
    """Documents (dedup/web_minhash) and the five attribute outputs, row-aligned."""
    corpus = CorpusStore(str(root))
    write_output(
        corpus,
        "dedup/web_minhash",
        parts,
        DOC_SCHEMA,
        lambda r: {
            "doc_id": r["doc_id"],
            "source": "web",
            "native_id": r["doc_id"],
            "text": r["text"],
        },
    )
    fills = {
        "lang": (
            LID_SCHEMA,
            lambda r: {
                "doc_id": r["doc_id"],
                "lang": r["lang"],
                "score": r["lang_score"],
                "raw_label": r["lang"],
                "model": "t",
                "script": "Latn",
                "second_stage": False,
            },
        ),
        "domain": (
            DomainTagger.output_schema,
            lambda r: {"doc_id": r["doc_id"], "domain": r["domain"], "domain_score": 0.9},
        ),
        "quality": (
            QualityTagger.output_schema,
            lambda r: {
                "doc_id": r["doc_id"],
                "edu_score": r["edu_score"],
                "edu_label": round(r["edu_score"]),
                "dclm_prob": 0.5,
            },
        ),
        "safety": (
            SafetyTagger.output_schema,
            lambda r: {"doc_id": r["doc_id"], "flags": r["flags"]},
        ),
        "cluster": (
            CLUSTER_SCHEMA,
            lambda r: {
                "doc_id": r["doc_id"],
                "cluster_id": r["doc_id"],
                "cluster_size": r["cluster_size"],
                "kept": True,
            },
        ),
    }
    for kind, (schema, fill) in fills.items():
        write_output(corpus, ATTRS[kind], parts, schema, fill)
    return corpus


def recipe_doc(**stage) -> dict:
    s1 = {"seq_len": 4096, "filters": {"drop_flags": ["toxic"]}}
    s1.update(stage)
    return {
        "version": 1,
        "seed": 7,
        "sources": [{"name": "web", "documents": "dedup/web_minhash", "attributes": dict(ATTRS)}],
        "stages": {"s1": s1},
    }


def selection(corpus: CorpusStore, stage: str = "s1") -> dict[str, dict]:
    out = corpus.output(f"mix/{stage}")
    rows = {}
    for path, _ in out.shard_infos():
        for r in read_shard(out.fs, path).to_pylist():
            rows[r["doc_id"]] = r
    return rows


# recipe ---------------------------------------------------------------------------
def test_shipped_recipe_loads_with_report_defaults():
    r = load_recipe(RECIPE_PATH)
    assert [s.seq_len for s in r.stages.values()] == [4096, 4096, 32768]
    s3 = {b.name: (b.min, b.max, b.share) for b in r.stage("s3").length_buckets}
    assert s3 == {"16k-32k": (16384, 32768, 0.75), "4k-16k": (4096, 16383, 0.25)}
    s2 = r.stage("s2")
    assert s2.weight("domain", "math") > s2.weight("domain", "news") == 1.0
    assert r.stage_hash("s1") != r.stage_hash("s2")


def _set(d: dict, path: str, value) -> dict:
    d = copy.deepcopy(d)
    *keys, last = path.split(".")
    node = d
    for k in keys:
        node = node[int(k)] if isinstance(node, list) else node[k]
    node[last] = value
    return d


@pytest.mark.parametrize(
    "path, value, message",
    [
        ("stages.s1.weights", {"domain": {"maths": 2}}, "unknown label 'maths'"),
        ("stages.s1.weights", {"lang": {"eng_Latn": -1}}, "expected a number >= 0"),
        ("stages.s1.weights", {"colour": {}}, "unknown key(s) ['colour']"),
        ("stages.s1.filters", {"drop_flags": ["rude"]}, "unknown flag(s) ['rude']"),
        ("stages.s1.filters", {"min_edu_score": 7}, "min_edu_score is 0-5"),
        ("stages.s1.filters", {"drop_flags": "toxic"}, "expected a list of safety flags"),
        ("stages.s1.cluster_size", [[2, 1.0]], "sizes must start at 1"),
        ("stages.s1.seq_len", "4k", "seq_len: expected an integer"),
        (
            "stages.s1.length_buckets",
            [{"name": "a", "min": 1, "max": 9, "share": 0.5}],
            "add up to 1",
        ),
        (
            "stages.s1.length_buckets",
            [
                {"name": "a", "min": 1, "max": 9, "share": 0.5},
                {"name": "b", "min": 9, "max": 20, "share": 0.5},
            ],
            "overlap",
        ),
        ("stages.s1.length_buckets", [{"name": "a", "min": 1, "max": 5000, "share": 1}], "seq_len"),
        ("sources.0.family", "poetry", "'poetry' is not one of"),
        ("sources.0.documents", 3, "expected an output key"),
        ("seed", -1, "seed: expected an integer >= 0"),
    ],
)
def test_recipe_errors_name_the_key(path, value, message):
    with pytest.raises(RecipeError) as err:
        parse_recipe(_set(recipe_doc(), path, value), "mix.yaml")
    assert message in str(err.value) and "mix.yaml" in str(err.value)


def test_bad_yaml_file_is_a_recipe_error(tmp_path: Path):
    path = tmp_path / "mix.yaml"
    path.write_text("stages: [unclosed\n")
    with pytest.raises(RecipeError, match="cannot read the recipe"):
        load_recipe(path)


def test_filter_on_missing_attribute_is_rejected(tmp_path: Path, paragraphs):
    corpus = make_store(tmp_path, [[doc(0, paragraphs[0][0])]])
    d = recipe_doc(filters={"min_lang_score": 0.5})
    del d["sources"][0]["attributes"]["lang"]
    with pytest.raises(RecipeError, match="filters on lang attributes"):
        mix_stage(corpus, parse_recipe(d), "s1", RUNNER)


# repeats --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def short_docs(paragraphs) -> list[dict]:
    """600 one-paragraph documents; cluster sizes 1 / 3 / 20 / 200 in turn."""
    return [
        doc(i, paragraphs[i % len(paragraphs)][0], cluster_size=(1, 3, 20, 200)[i % 4])
        for i in range(600)
    ]


UPSAMPLE = [[1, 1.0], [2, 2.5], [10, 0.4], [100, 0.0]]


def test_upsampling_matches_weights_deterministically(tmp_path: Path, short_docs):
    corpus = make_store(tmp_path / "a", [short_docs[:250], short_docs[250:]])
    recipe = parse_recipe(recipe_doc(cluster_size=UPSAMPLE))
    mix_stage(corpus, recipe, "s1", RUNNER)
    rows = selection(corpus)
    weights = {1: 1.0, 3: 2.5, 20: 0.4, 200: 0.0}
    by_size = defaultdict(list)
    for r in rows.values():
        w = weights[r["cluster_size"]]
        assert r["weight"] == w
        u = uniform(7, "s1", r["doc_id"])
        assert r["repeats"] == int(w) + (u < w - int(w))  # floor part exact, rest by u
        by_size[r["cluster_size"]].append(r["repeats"])
    assert set(by_size[1]) == {1} and set(by_size[200]) == {0}
    assert set(by_size[3]) == {2, 3} and set(by_size[20]) == {0, 1}
    for size in (3, 20):  # 150 documents each: the mean is within 4 standard errors
        mean, w = np.mean(by_size[size]), weights[size]
        assert abs(mean - w) < 4 * np.sqrt(0.25 / 150)

    # same seed, documents spread over other parts: the same repeats per document
    other = make_store(tmp_path / "b", [short_docs[400:], short_docs[:100], short_docs[100:400]])
    mix_stage(other, recipe, "s1", RUNNER)
    assert {k: r["repeats"] for k, r in selection(other).items()} == {
        k: r["repeats"] for k, r in rows.items()
    }
    # another seed: another draw, same expectation; the finished scan is reused as is
    scanned = other.output("mix/scan").manifest().created_at
    reseeded = parse_recipe({**recipe_doc(cluster_size=UPSAMPLE), "seed": 8})
    mix_stage(other, reseeded, "s1", RUNNER)
    assert other.output("mix/scan").manifest().created_at == scanned
    assert {k: r["repeats"] for k, r in selection(other).items()} != {
        k: r["repeats"] for k, r in rows.items()
    }
    counters = corpus.output("mix/s1").manifest().counters
    assert counters["copies"] == sum(r["repeats"] for r in rows.values())
    assert counters["dropped.weight_zero"] == len(by_size[200])
    assert counters["dropped.sampled_out"] == by_size[20].count(0)


def test_thresholds_drop_what_they_should(tmp_path: Path, paragraphs):
    text = paragraphs[3][0]
    docs = [
        doc(0, text),
        doc(1, text, flags=["toxic"]),
        doc(2, text, flags=["spam"]),  # not in drop_flags: kept
        doc(3, text, edu_score=0.4),
        doc(4, text, lang_score=0.2),
        doc(5, text, domain="fiction"),  # weight 0
        doc(6, "x"),  # 2 tokens < min_tokens
    ]
    corpus = make_store(tmp_path, [docs])
    filters = {
        "drop_flags": ["toxic"],
        "min_edu_score": 0.5,
        "min_lang_score": 0.5,
        "min_tokens": 3,
    }
    mix_stage(
        corpus,
        parse_recipe(recipe_doc(filters=filters, weights={"domain": {"fiction": 0}})),
        "s1",
        RUNNER,
    )
    rows = selection(corpus)
    got = {k: (r["repeats"], r["reason"]) for k, r in rows.items()}
    assert got == {
        "d00000": (1, None),
        "d00001": (0, "safety:toxic"),
        "d00002": (1, None),
        "d00003": (0, "edu_score"),
        "d00004": (0, "lang_score"),
        "d00005": (0, "weight_zero"),
        "d00006": (0, "min_tokens"),
    }
    meta = mix_metadata(corpus.output("mix/s1"))
    assert meta["dropped"] == {
        "safety": 1,
        "edu_score": 1,
        "lang_score": 1,
        "weight_zero": 1,
        "min_tokens": 1,
    }
    assert meta["documents_kept"] == 2 and meta["tokens"] == 2 * rows["d00000"]["n_tokens"]


def test_attributes_for_other_documents_fail_with_the_shard(tmp_path: Path, paragraphs):
    corpus = make_store(tmp_path, [[doc(0, paragraphs[0][0]), doc(1, paragraphs[1][0])]])
    out = corpus.output(ATTRS["domain"])
    stale = pa.Table.from_pylist(
        [{"doc_id": "zzz", "domain": "news", "domain_score": 1.0}] * 2,
        schema=DomainTagger.output_schema,
    )
    info = write_shard(out.fs, out.shard_path("part-00000"), stale, DomainTagger.output_schema)
    out.write_manifest(Manifest(stage="d", version="1", config={}, shards=[info]))
    with pytest.raises(
        StageFailed, match=r"domain/web/part-00000.parquet: 2 of 2 documents have no attribute row"
    ):
        mix_stage(corpus, parse_recipe(recipe_doc()), "s1", RUNNER)


def test_superset_attributes_are_joined_by_doc_id(tmp_path: Path, paragraphs):
    """MinHash attributes describe the dedup input: extra rows, another order."""
    docs = [doc(i, paragraphs[i][0], cluster_size=i + 1) for i in range(3)]
    corpus = make_store(tmp_path, [docs])
    removed = {**docs[0], "doc_id": "gone", "cluster_size": 9}
    write_output(
        corpus,
        ATTRS["cluster"],
        [[docs[2], removed, docs[0], docs[1]]],
        CLUSTER_SCHEMA,
        lambda r: {
            "doc_id": r["doc_id"],
            "cluster_id": "c",
            "cluster_size": r["cluster_size"],
            "kept": True,
        },
    )
    mix_stage(corpus, parse_recipe(recipe_doc()), "s1", RUNNER)
    assert {k: r["cluster_size"] for k, r in selection(corpus).items()} == {
        "d00000": 1,
        "d00001": 2,
        "d00002": 3,
    }


# S3 length buckets -------------------------------------------------------------------
S3 = {
    "seq_len": 32768,
    "length_buckets": [
        {"name": "16k-32k", "min": 16384, "max": 32768, "share": 0.75},
        {"name": "4k-16k", "min": 4096, "max": 16383, "share": 0.25},
    ],
}


def test_s3_hits_75_25_within_one_point_through_the_export(tmp_path: Path, paragraphs, tok):
    rng = random.Random(5)
    docs = [
        doc(i, text_of(paragraphs, rng.randint(17000, 31000), rng), lang="fra_Latn")
        for i in range(40)
    ]
    docs += [doc(100 + i, text_of(paragraphs, rng.randint(4300, 12000), rng)) for i in range(80)]
    docs += [
        doc(300, text_of(paragraphs, 40000, rng)),
        doc(301, paragraphs[0][0]),
    ]  # too long, too short
    corpus = make_store(tmp_path, [docs[::2], docs[1::2]])
    manifest = mix_stage(corpus, parse_recipe(recipe_doc(**S3)), "s1", RUNNER)
    meta = mix_metadata(corpus.output("mix/s1"))
    assert meta["length_report"]["status"] == "ok", meta["length_report"]
    shares = {r["label"]: r["achieved_share"] for r in meta["mixture"] if r["group"] == "length"}
    assert abs(shares["16k-32k"] - 0.75) <= 0.01 and abs(shares["4k-16k"] - 0.25) <= 0.01
    rows = selection(corpus)
    assert rows["d00300"]["reason"] == rows["d00301"]["reason"] == "length"
    assert all(
        r["repeats"] == 1 for r in rows.values() if r["length"] == "16k-32k"
    )  # all long text
    hist = {b["min"]: b["tokens"] for b in meta["length_histogram"]}
    assert sum(hist.values()) == meta["tokens"] and hist[32769] == hist[0] == 0
    long_tokens = sum(n for lo, n in hist.items() if 16384 <= lo < 32769)
    assert abs(long_tokens / meta["tokens"] - 0.75) <= 0.01

    exported = export_stage(
        stage_documents(corpus.output("mix/s1"), corpus, tok.sha256),
        corpus.output("tokens/s1"),
        32768,
        tok,
        stage="tokens/s1",
        parts=2,
        recipe_hash=manifest.config["recipe_hash"],
        processes=1,
    )
    c = exported.counters
    assert c["tokens"] == meta["tokens"]
    assert abs(c["tokens.length=16k-32k"] / c["tokens"] - 0.75) <= 0.01


def test_s3_without_long_text_says_so(tmp_path: Path, paragraphs):
    rng = random.Random(1)
    corpus = make_store(tmp_path, [[doc(i, text_of(paragraphs, 6000, rng)) for i in range(3)]])
    mix_stage(corpus, parse_recipe(recipe_doc(**S3)), "s1", RUNNER)
    report = mix_metadata(corpus.output("mix/s1"))["length_report"]
    assert report["status"].startswith("not enough long text: no documents of 16k-32k")
    assert report["buckets"]["4k-16k"]["achieved_share"] == 1.0


# end to end --------------------------------------------------------------------------
def test_every_token_of_every_kept_doc_appears_repeats_times(tmp_path: Path, paragraphs, tok):
    rng = random.Random(3)
    langs = ["eng_Latn", "deu_Latn", "zho_Hans"]
    docs = [
        doc(
            i,
            text_of(paragraphs, rng.randint(50, 6000), rng),
            lang=langs[i % 3],
            domain=("news", "math")[i % 2],
            cluster_size=3 if i % 4 == 1 else 1,
            flags=["toxic"] if i % 7 == 0 else [],
        )
        for i in range(40)
    ]
    corpus = make_store(tmp_path, [docs[:15], [], docs[15:]])
    recipe = parse_recipe(
        recipe_doc(cluster_size=[[1, 1.0], [2, 2.0]], weights={"domain": {"math": 1.5}})
    )
    manifest = mix_stage(corpus, recipe, "s1", RUNNER)
    rows = selection(corpus)
    assert manifest.config["recipe_hash"] == recipe.stage_hash("s1")
    batches = list(stage_documents(corpus.output("mix/s1"), corpus, tok.sha256))
    fed = [row for tb in batches for row in tb.rows()]
    assert [d[0] for d in fed] == sorted(d[0] for d in fed)  # parts, then rows: ids ascend
    assert {d[0]: d[2] for d in fed} == {k: r["repeats"] for k, r in rows.items() if r["repeats"]}
    assert all(rows[f"d{i:05d}"]["repeats"] == 0 for i in range(0, 40, 7))
    assert any(d[2] == 2 for d in fed) and any(d[2] == 3 for d in fed)

    out = corpus.output("tokens/s1")
    exported = export_stage(batches, out, 4096, tok, stage="tokens/s1", parts=2, processes=1)
    texts = {d["doc_id"]: d["text"] for d in docs}
    for doc_id, ids, _, _ in fed:  # the scan's cached ids are the document's tokens
        assert ids.tolist() == tok.encode_doc(texts[doc_id]).tolist()
    pieces = defaultdict(list)
    for p in range(2):
        prefix = Path(out.folder) / f"part-{p:05d}"
        seqs, _ = read_megatron(str(prefix))
        for r in pq.read_table(f"{prefix}.docs.parquet").to_pylist():
            piece = seqs[r["sequence"]][r["start"] : r["start"] + r["length"]]
            pieces[(r["doc_id"], r["copy"])].append((r["doc_offset"], piece))
    copies = Counter(doc_id for doc_id, _ in pieces)
    assert copies == {d[0]: d[2] for d in fed}
    for (doc_id, _), parts in pieces.items():
        ids = [t for _, piece in sorted(parts) for t in piece]
        assert ids == tok.encode_doc(texts[doc_id]).tolist()
        assert len(ids) == rows[doc_id]["n_tokens"]

    meta = mix_metadata(corpus.output("mix/s1"))
    assert meta["tokens"] == exported.counters["tokens"] == sum(meta["tokens_by_lang"].values())
    for lang, n in meta["tokens_by_lang"].items():
        assert exported.counters[f"tokens.lang={lang}"] == n
    mixture = {(r["group"], r["label"]): r for r in meta["mixture"]}
    math_row = mixture[("domain", "math")]
    assert math_row["achieved_share"] > math_row["pool_share"]  # upweighted
    assert (
        abs(sum(r["achieved_share"] for r in meta["mixture"] if r["group"] == "domain") - 1) < 1e-5
    )
    assert yaml.safe_dump(meta) and json.dumps(meta)  # plain data for Dagster metadata


def test_export_refuses_ids_from_another_tokenizer_or_a_newer_scan(tmp_path: Path, paragraphs, tok):
    rng = random.Random(5)
    corpus = make_store(tmp_path, [[doc(i, text_of(paragraphs, 300, rng)) for i in range(6)]])
    recipe = parse_recipe(recipe_doc())
    mix_stage(corpus, recipe, "s1", RUNNER)
    sel = corpus.output("mix/s1")
    assert sum(len(tb) for tb in stage_documents(sel, corpus, tok.sha256)) == 6
    with pytest.raises(ManifestError, match="tokenised with tokenizer sha256"):
        next(stage_documents(sel, corpus, "0" * 64))
    # the documents change and the scan is redone, but mix/s1 is the old selection
    corpus2 = make_store(tmp_path, [[doc(i, text_of(paragraphs, 200, rng)) for i in range(5)]])
    scan_corpus(corpus2, recipe, RUNNER)
    with pytest.raises(ManifestError, match="re-run the mix"):
        next(stage_documents(sel, corpus2, tok.sha256))


def edu_bucket(score: float | None) -> str:
    """Reference for ``select.edu_buckets``, one score at a time."""
    return UNKNOWN if score is None else str(min(5, max(0, int(score + 0.5))))


def label_row(row: dict) -> dict[str, str]:
    """Reference: the labels a document is weighted and reported by (no length bucket)."""
    return {
        "source": row["source"],
        "family": row["family"],
        "lang": row["lang"] or UNKNOWN,
        "domain": row["domain"] or UNKNOWN,
        "edu": edu_bucket(row["edu_score"]),
    }


def judge(stage: StageRecipe, row: dict, labels: dict[str, str]) -> tuple[float, str]:
    """Reference, one row at a time: (weight before length scaling, drop reason or "")."""
    f = stage.filters
    flagged = set(row["flags"] or ()) & set(f.drop_flags)
    if flagged:
        return 0.0, "safety:" + sorted(flagged)[0]
    if f.min_edu_score > 0 and (row["edu_score"] or 0.0) < f.min_edu_score:
        return 0.0, "edu_score"
    if f.min_lang_score > 0 and (row["lang_score"] or 0.0) < f.min_lang_score:
        return 0.0, "lang_score"
    if row["n_tokens"] < f.min_tokens:
        return 0.0, "min_tokens"
    if stage.length_buckets and length_bucket(stage, row["n_tokens"]) is None:
        return 0.0, "length"
    w = stage.cluster_weight(row["cluster_size"] or 1)
    for group, label in labels.items():
        w *= stage.weight(group, label)
    return w, ("weight_zero" if w == 0 else "")


def test_batch_judging_equals_the_per_row_rules():
    """judge_batch (what SelectStage runs) == the per-row reference rules, row for row."""
    rng = random.Random(9)
    stage = parse_recipe(
        recipe_doc(
            filters={"drop_flags": ["toxic", "adult"], "min_edu_score": 1.0, "min_lang_score": 0.3},
            weights={"domain": {"math": 2.5, "fiction": 0}, "lang": {"default": 0.7}},
            cluster_size=[[1, 1.0], [2, 1.5], [50, 0.25]],
            length_buckets=[
                {"name": "a", "min": 10, "max": 999, "share": 0.5},
                {"name": "b", "min": 1000, "max": 5000, "share": 0.5},
            ],
            seq_len=32768,
        )
    ).stage("s1")
    rows = []
    for i in range(500):
        pick = rng.choice
        rows.append(
            {
                "doc_id": f"d{i}",
                "source": pick(["web", "pdf"]),
                "family": pick(["none", "math"]),
                "part": "p",
                "row": i,
                "n_tokens": rng.randint(1, 6000),
                "lang": pick(["eng_Latn", "deu_Latn", None]),
                "lang_score": pick([None, 0.1, 0.3, 0.9]),
                "domain": pick(["math", "fiction", "news", None]),
                "edu_score": pick([None, 0.2, 0.5, 1.0, 1.4999999, 2.5, 2.6, 4.9, -0.7, 7.3]),
                "dclm_prob": None,
                "flags": pick([None, [], ["spam"], ["toxic"], ["adult", "toxic"]]),
                "cluster_size": pick([None, 1, 3, 70]),
            }
        )
    batch = pa.RecordBatch.from_pylist(
        rows, schema=pa.schema([SCAN_SCHEMA.field(n) for n in LABEL_COLUMNS])
    )
    labels, w, reasons, buckets = judge_batch(stage, batch)
    labels = {g: v.to_pylist() for g, v in labels.items()}
    for i, row in enumerate(rows):
        want = label_row(row)
        assert {g: labels[g][i] for g in want} == want
        assert (w[i], reasons[i]) == judge(stage, row, want), row
        assert buckets[i] == length_bucket(stage, row["n_tokens"])
    assert {"safety:adult", "edu_score", "lang_score", "length", "weight_zero", ""} <= set(reasons)
