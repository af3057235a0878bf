"""The code location: everything Dagster loads (workspace.yaml, dg, dagster dev)."""

import dagster as dg

from assets import labels, mix, model, spark, web
from assets.resources import CrawlResource, RunnerResource, StoreResource, WebInputResource
from assets.spark import SparkResource, spark_dedup_job, spark_dedup_nightly

defs = dg.Definitions(
    assets=dg.load_assets_from_modules([web, labels, mix, model, spark]),
    asset_checks=dg.load_asset_checks_from_modules([web, labels, mix, model, spark]),
    jobs=[
        dg.define_asset_job("web_text", selection=dg.AssetSelection.groups("web")),
        dg.define_asset_job("labels", selection=dg.AssetSelection.groups("labels")),
        dg.define_asset_job("curriculum", selection=dg.AssetSelection.groups("mix", "tokens")),
        spark_dedup_job,
    ],
    schedules=[spark_dedup_nightly],
    resources={
        "store": StoreResource(),
        "runner": RunnerResource(),
        "web_input": WebInputResource(),
        "crawler": CrawlResource(),
        "spark": SparkResource(),
    },
)
