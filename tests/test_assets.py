"""The Dagster code location: definitions load, and materialising writes the shards.

Uses a real (ephemeral) Dagster instance and the bundled sample WARCs.
"""

from pathlib import Path

import dagster as dg
import pyarrow.parquet as pq

from assets.definitions import defs
from assets.resources import (
    PROJECT_ROOT,
    CrawlResource,
    RunnerResource,
    StoreResource,
    WebInputResource,
)
from assets.spark import SparkResource
from storage.layout import CorpusStore

EXPECTED_KEYS = {
    "raw/warc_files",
    "raw/crawl",
    "text/web",
    "text/web_filtered",
    "dedup/web_exact",
    "dedup/web_minhash",
    "attributes/lang",
    "attributes/domain",
    "attributes/quality",
    "attributes/safety",
    "attributes/signals",
    "mix/scan",
    "mix/s1",
    "mix/s2",
    "mix/s3",
    "tokens/s1",
    "tokens/s2",
    "tokens/s3",
    "model/smoke",
    "dedup/web_minhash_spark",
}
EXPECTED_DEPS = {
    "raw/warc_files": set(),
    "raw/crawl": set(),
    "text/web": {"raw/warc_files", "raw/crawl"},
    "text/web_filtered": {"text/web"},
    "dedup/web_exact": {"text/web_filtered"},
    "dedup/web_minhash": {"dedup/web_exact"},
    "attributes/lang": {"dedup/web_minhash"},
    "attributes/domain": {"dedup/web_minhash"},
    "attributes/quality": {"dedup/web_minhash"},
    "attributes/safety": {"dedup/web_minhash"},
    "attributes/signals": {"dedup/web_minhash"},
    "mix/scan": {
        "dedup/web_minhash",
        "attributes/lang",
        "attributes/domain",
        "attributes/quality",
        "attributes/safety",
    },
    "mix/s1": {"mix/scan"},
    "mix/s2": {"mix/scan"},
    "mix/s3": {"mix/scan"},
    "tokens/s1": {"mix/s1"},
    "tokens/s2": {"mix/s2"},
    "tokens/s3": {"mix/s3"},
    "model/smoke": {"tokens/s1", "tokens/s2", "tokens/s3"},
    "dedup/web_minhash_spark": {"dedup/web_exact"},
}
UNCHECKED = {"mix/scan", "mix/s1", "mix/s2", "mix/s3"}  # selections: checked via tokens/*


def test_definitions_load_with_expected_asset_keys_and_checks():
    keys = {k.to_user_string() for k in defs.resolve_all_asset_keys()}
    assert keys == EXPECTED_KEYS
    graph = defs.resolve_asset_graph()
    deps = {
        k.to_user_string(): {p.to_user_string() for p in graph.get(k).parent_keys}
        for k in defs.resolve_all_asset_keys()
    }
    assert deps == EXPECTED_DEPS
    checked = {c.asset_key.to_user_string() for c in graph.asset_check_keys}
    assert checked == EXPECTED_KEYS - UNCHECKED  # a check on each output a user consumes


def test_materialise_through_dagster_writes_shards(tmp_path: Path):
    store_root = tmp_path / "store"
    assets = list(defs.assets or [])
    checks = list(defs.asset_checks or [])
    with dg.DagsterInstance.ephemeral() as instance:
        result = dg.materialize(
            [*assets, *checks],
            instance=instance,
            run_config={"ops": {"model__smoke": {"config": {"steps": 30, "window": 64}}}},
            resources={
                "store": StoreResource(root=str(store_root)),
                "runner": RunnerResource(processes=2),
                "web_input": WebInputResource(warc_input=str(PROJECT_ROOT / "samples" / "warc")),
                "crawler": CrawlResource(seeds=""),  # the bundled sample site on 127.0.0.1
                "spark": SparkResource(master="local[2]", input_url=str(store_root)),
            },
        )
    assert result.success
    evals = result.get_asset_check_evaluations()
    assert len(evals) == len(EXPECTED_KEYS - UNCHECKED)
    assert [e.check_name for e in evals if not e.passed] == []

    mats = {
        e.event_specific_data.materialization.asset_key.to_user_string(): e.event_specific_data.materialization
        for e in result.get_asset_materialization_events()
    }
    assert set(mats) == EXPECTED_KEYS
    text_md = mats["text/web"].metadata
    assert text_md["records_out"].value > 20
    assert (
        text_md["records_in"].value == text_md["records_out"].value + text_md["quarantined"].value
    )
    assert mats["raw/crawl"].metadata["records_out"].value >= 20  # the sample site's pages
    filt_md = mats["text/web_filtered"].metadata
    assert filt_md["records_in"].value == text_md["records_out"].value
    assert (
        filt_md["records_in"].value == filt_md["records_out"].value + filt_md["quarantined"].value
    )
    dedup_md = mats["dedup/web_exact"].metadata
    # the crawl fetched the news pages the sample WARC holds too: the copies go
    assert dedup_md["duplicates_removed"].value >= 3
    assert dedup_md["records_out"].value == (
        filt_md["records_out"].value - dedup_md["duplicates_removed"].value
    )

    store = CorpusStore(str(store_root))
    mh_md = mats["dedup/web_minhash"].metadata
    assert mh_md["records_in"].value == dedup_md["records_out"].value
    assert mh_md["records_out"].value == mh_md["records_in"].value - mh_md["removed"].value

    for key in (
        "attributes/lang",
        "attributes/domain",
        "attributes/quality",
        "attributes/safety",
        "attributes/signals",
    ):
        md = mats[key].metadata
        assert md["records_in"].value == md["records_out"].value == mh_md["records_out"].value

    for key in ("text/web", "text/web_filtered", "dedup/web_exact", "dedup/web_minhash"):
        out = store.output(key)
        manifest = out.manifest()
        manifest.verify(out.fs, out.folder)
        rows = sum(pq.read_table(p).num_rows for p, _ in out.shard_infos())
        assert rows == manifest.rows == mats[key].metadata["records_out"].value
    # every selected token is exported exactly once per repeat, at the stage's length
    for stage, seq_len in (("s1", 4096), ("s2", 4096), ("s3", 32768)):
        mix_md, tok_md = mats[f"mix/{stage}"].metadata, mats[f"tokens/{stage}"].metadata
        assert tok_md["tokens"].value == mix_md["tokens"].value
        assert tok_md["seq_len"].value == seq_len
    assert mats["tokens/s1"].metadata["tokens"].value > 10_000
    smoke = mats["model/smoke"].metadata
    assert smoke["steps"].value == 30
    assert smoke["final_loss"].value < smoke["first_loss"].value

    # the manifest digest is the data version Dagster records
    assert (
        mats["text/web"].tags["dagster/data_version"]
        == store.output("text/web").manifest().digest()
    )
