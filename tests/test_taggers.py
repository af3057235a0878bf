"""The domain, quality and safety taggers as runner stages, on shipped models and real text.

Documents are real held-out text from the shipped pool (classifiers/data/pool.jsonl.gz,
never seen in training) plus edge cases: empty, whitespace-only, binary and a 10 MB
document. Checks: row-aligned attribute shards keyed by doc_id, labels of held-out
documents of well-covered domains, low-confidence outputs for unreadable documents,
and the histogram helpers the Dagster assets use.
"""

from __future__ import annotations

import pytest
from stages_for_tests import doc_row, output_dir, shard_tasks, write_doc_output

from classifiers.build_defaults import labelled, pool
from classifiers.histograms import domain_histogram, quality_histogram, safety_counts
from classifiers.taggers import DomainTagger, QualityTagger, SafetyTagger
from classifiers.train import TrainParams, split
from pipelines.runner import LocalRunner
from storage import read_shard
from storage.schema import check_aligned

WELL_COVERED = ("code", "math", "law", "religion", "reference")
EDGE = {
    "empty": "",
    "blank": "   \n\t  \n",
    "binary": "".join(chr(i % 32) for i in range(3000)),
    "huge": "The committee reviewed the annual budget and the audit report. " * 160_000,
}


@pytest.fixture(scope="module")
def tagged(tmp_path_factory):
    """Two document shards (held-out text + edge cases) run through all three taggers."""
    root = tmp_path_factory.mktemp("taggers")
    _, test = split(labelled("domain", pool()), TrainParams().test_fraction, TrainParams().seed)
    known = [(text, labels[0]) for text, labels in test if labels[0] in WELL_COVERED][:40]
    rows = [doc_row(f"held-{i}", text, i) for i, (text, _) in enumerate(known)]
    edge_rows = [doc_row(name, text, 100 + i) for i, (name, text) in enumerate(EDGE.items())]
    docs = output_dir(root / "docs")
    write_doc_output(docs, [rows[:20] + edge_rows, rows[20:]])
    outputs = {}
    for stage, processes in [(DomainTagger(), 2), (QualityTagger(), 1), (SafetyTagger(), 1)]:
        out = output_dir(root / stage.name)
        manifest = LocalRunner(processes).run_over(stage, docs, out)
        outputs[stage.name] = (out, manifest)
    truth = {r["doc_id"]: label for r, (_, label) in zip(rows, known, strict=True)}
    edge_ids = {r["doc_id"]: name for r, name in zip(edge_rows, EDGE, strict=True)}
    return docs, outputs, truth, edge_ids


def _table(out, part):
    return read_shard(out.fs, out.shard_path(part))


def test_attribute_shards_are_row_aligned_with_their_documents(tagged):
    docs, outputs, _, _ = tagged
    for name, (out, manifest) in outputs.items():
        assert manifest.kind == "attributes", name
        assert manifest.counters["records_out"] == 44, name
        for task in shard_tasks(docs):
            check_aligned(read_shard(docs.fs, task.input), _table(out, task.part))


def test_held_out_documents_of_well_covered_domains_get_their_domain(tagged):
    docs, outputs, truth, _ = tagged
    out, _ = outputs["domain"]
    hits = 0
    for task in shard_tasks(docs):
        for row in _table(out, task.part).to_pylist():
            if row["doc_id"] in truth:
                hits += row["domain"] == truth[row["doc_id"]]
                assert len(row["domain_top3"]) == 3
                assert row["domain_top3"][0]["label"] == row["domain"]
    assert hits >= 0.9 * len(truth), f"{hits}/{len(truth)} held-out documents labelled right"


def test_unreadable_documents_get_low_confidence_labels_not_errors(tagged):
    docs, outputs, _, edge_ids = tagged
    part = shard_tasks(docs)[0].part
    by_id = {
        name: {r["doc_id"]: r for r in _table(out, part).to_pylist()}
        for name, (out, _) in outputs.items()
    }
    for doc_id, name in edge_ids.items():
        domain, quality, safety = (by_id[n][doc_id] for n in ("domain", "quality", "safety"))
        if name == "huge":  # a real text, tagged from its bounded sample
            assert domain["note"] is None and domain["domain_score"] > 0.0
            assert 0.0 <= quality["edu_score"] <= 5.0
            continue
        expected = "binary" if name == "binary" else "empty"
        assert domain["note"] == quality["note"] == safety["note"] == expected
        assert (domain["domain"], domain["domain_score"]) == ("other", 0.0)
        assert (quality["edu_score"], quality["dclm_prob"]) == (0.0, 0.0)
        assert safety["flags"] == [] and safety["toxic_score"] == 0.0
    assert outputs["domain"][1].counters["docs.binary"] == 1
    assert outputs["domain"][1].counters["docs.empty"] == 2


def test_safety_labels_the_default_model_lacks_are_null(tagged):
    docs, outputs, _, _ = tagged
    out, _ = outputs["safety"]
    table = _table(out, shard_tasks(docs)[1].part)
    assert table.column("adult_score").null_count == table.num_rows
    assert table.column("spam_score").null_count == table.num_rows
    assert table.column("toxic_score").null_count == 0


def test_histograms_count_every_document(tagged):
    _, outputs, truth, _ = tagged
    domains = domain_histogram(outputs["domain"][0])
    assert sum(domains.values()) == 44 and domains["other"] >= 3
    assert domains.get("math", 0) >= sum(v == "math" for v in truth.values()) - 2
    quality = quality_histogram(outputs["quality"][0])
    assert sum(quality["edu"].values()) == sum(quality["dclm"].values()) == 44
    assert safety_counts(outputs["safety"][0])["documents"] == 44


def test_config_names_the_model_content_and_missing_models_fail_clearly(tmp_path):
    cfg = DomainTagger().config()
    assert len(cfg["model_sha256"]["domain"]) == 64
    assert QualityTagger().config()["model_sha256"].keys() == {"edu", "dclm"}
    with pytest.raises(FileNotFoundError, match="nope.ftz does not exist"):
        DomainTagger(model=str(tmp_path / "nope.ftz")).config()
