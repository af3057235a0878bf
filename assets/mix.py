"""Mix and tokens assets: per-document curriculum selections and their token shards.

    attributes/* + dedup/web_minhash --> mix/scan --> mix/s1 --> tokens/s1   (4,096)
                                                  --> mix/s2 --> tokens/s2   (4,096)
                                                  --> mix/s3 --> tokens/s3   (32,768)

``mix/scan`` tokenises every document once (Qwen3) and joins it with its labels;
``mix/sN`` applies stage N of recipes/mix.yaml (weights, thresholds, upsampling by
cluster size, S3's 75/25 length buckets) as repeats per document; ``tokens/sN``
packs the scan's token ids of the selected documents and writes Megatron .bin/.idx
shards with document boundaries.
"""

import dagster as dg

from assets.labels import DOMAIN, LANG, QUALITY, SAFETY
from assets.metadata import materialize_result
from assets.resources import RunnerResource, StoreResource
from assets.web import DEDUP_WEB_MINHASH
from classifiers.histograms import markdown_table
from pipelines.mix.feed import mix_metadata, stage_documents
from pipelines.mix.recipe import load_recipe
from pipelines.mix.scan import scan_corpus
from pipelines.mix.select import counter_table, mix_stage
from pipelines.tokens.export import export_stage
from pipelines.tokens.tokenizer import qwen3

SCAN = dg.AssetKey(["mix", "scan"])
STAGES = ("s1", "s2", "s3")


def _mixture_md(rows: list[dict]) -> str:
    lines = ["| group | label | pool | target | achieved |", "|---|---|---:|---:|---:|"]
    lines += [
        f"| {r['group']} | {r['label']} | {100 * r['pool_share']:.1f}% "
        f"| {100 * r['target_share']:.1f}% | {100 * r['achieved_share']:.1f}% |"
        for r in rows
    ]
    return "\n".join(lines)


@dg.asset(
    key=SCAN,
    deps=[DEDUP_WEB_MINHASH, LANG, DOMAIN, QUALITY, SAFETY],
    group_name="mix",
    kinds={"parquet"},
)
def mix_scan(context: dg.AssetExecutionContext, store: StoreResource, runner: RunnerResource):
    """Every document of every recipe source with its labels and exact token length."""
    corpus = store.store()
    out, manifest = scan_corpus(corpus, load_recipe(), runner.runner(), progress=context.log.info)
    return materialize_result(manifest, out.uri)


def _mix_asset(stage: str):
    @dg.asset(key=["mix", stage], deps=[SCAN], group_name="mix", kinds={"parquet"})
    def _mix(context: dg.AssetExecutionContext, store: StoreResource, runner: RunnerResource):
        corpus = store.store()
        manifest = mix_stage(
            corpus, load_recipe(), stage, runner.runner(), progress=context.log.info
        )
        sel = corpus.output(f"mix/{stage}")
        md = mix_metadata(sel)
        extra = {
            "tokens": dg.MetadataValue.int(md["tokens"]),
            "documents_kept": dg.MetadataValue.int(md["documents_kept"]),
            "copies": dg.MetadataValue.int(md["copies"]),
            "tokens_by_lang": dg.MetadataValue.md(markdown_table(md["tokens_by_lang"], "lang")),
            "tokens_by_domain": dg.MetadataValue.md(
                markdown_table(md["tokens_by_domain"], "domain")
            ),
            "tokens_by_source": dg.MetadataValue.md(
                markdown_table(md["tokens_by_source"], "source")
            ),
            "mixture_target_vs_achieved": dg.MetadataValue.md(_mixture_md(md["mixture"])),
            "dropped": dg.MetadataValue.json(md["dropped"]),
            "recipe_hash": dg.MetadataValue.text(md["recipe_hash"]),
        }
        if md["length_report"]:
            hist = {f"{h['min']}-{h['max'] or ''}": h["tokens"] for h in md["length_histogram"]}
            extra["length_histogram"] = dg.MetadataValue.md(markdown_table(hist, "tokens per doc"))
            extra["length_status"] = dg.MetadataValue.text(str(md["length_report"].get("status")))
        return materialize_result(manifest, sel.uri, extra)

    return _mix


def _tokens_asset(stage: str):
    @dg.asset(
        key=["tokens", stage],
        deps=[dg.AssetKey(["mix", stage])],
        group_name="tokens",
        kinds={"numpy"},
    )
    def _tokens(context: dg.AssetExecutionContext, store: StoreResource, runner: RunnerResource):
        corpus = store.store()
        recipe = load_recipe()
        sel = corpus.output(f"mix/{stage}")
        sm = sel.manifest()
        tok = qwen3()
        manifest = export_stage(
            stage_documents(sel, corpus, tok.sha256),
            corpus.output(f"tokens/{stage}"),
            recipe.stage(stage).seq_len,
            tok,
            stage=f"tokens/{stage}",
            seed=recipe.seed,
            recipe_hash=sm.config["recipe_hash"],
            processes=runner.runner().workers(1 << 10),
            inputs=[{"path": sel.uri, "digest": sm.digest()}],
            progress=context.log.info,
        )
        c = manifest.counters
        tables = counter_table(c, "tokens")
        seq_len = recipe.stage(stage).seq_len
        extra = {
            "tokens": dg.MetadataValue.int(int(c.get("tokens", 0))),
            "sequences": dg.MetadataValue.int(int(c.get("sequences", 0))),
            "seq_len": dg.MetadataValue.int(seq_len),
            "padding_fraction": dg.MetadataValue.float(
                round(c.get("padding", 0) / max(1, c.get("sequences", 0) * seq_len), 5)
            ),
            "tokenizer_sha256": dg.MetadataValue.text(manifest.config["tokenizer_sha256"]),
        }
        for group, counts in tables.items():
            extra[f"tokens_by_{group}"] = dg.MetadataValue.md(markdown_table(counts, group))
        return materialize_result(manifest, corpus.output(f"tokens/{stage}").uri, extra)

    return _tokens


mix_assets = [_mix_asset(s) for s in STAGES]
tokens_assets = [_tokens_asset(s) for s in STAGES]


def _tokens_check(stage: str):
    @dg.asset_check(
        asset=dg.AssetKey(["tokens", stage]),
        name=f"tokens_{stage}_readable",
        description="Checksums match; an independent reader sees every sequence at seq_len.",
    )
    def _check(store: StoreResource) -> dg.AssetCheckResult:
        from storage.manifest import ManifestError
        from train.data import ShardError, StageShards

        out = store.store().output(f"tokens/{stage}")
        try:
            manifest = out.manifest()
            manifest.verify(out.fs, out.folder, checksums=True)
            shards = StageShards(out.folder)
            n = len(shards)
            for i in range(n):
                shards.sequence(i)  # raises if segments do not add up to seq_len
        except (ManifestError, ShardError) as exc:
            return dg.AssetCheckResult(passed=False, description=str(exc))
        expected = int(manifest.counters.get("sequences", 0))
        return dg.AssetCheckResult(
            passed=n == expected, metadata={"sequences": n, "manifest_sequences": expected}
        )

    return _check


tokens_checks = [_tokens_check(s) for s in STAGES]
