"""The code location: everything Dagster loads (workspace.yaml, dg, dagster dev)."""

import dagster as dg

from assets import labels, mix, model, web
from assets.resources import CrawlResource, RunnerResource, StoreResource, WebInputResource

defs = dg.Definitions(
    assets=dg.load_assets_from_modules([web, labels, mix, model]),
    asset_checks=dg.load_asset_checks_from_modules([web, labels, mix, model]),
    jobs=[
        dg.define_asset_job("web_text", selection=dg.AssetSelection.groups("web")),
        dg.define_asset_job("labels", selection=dg.AssetSelection.groups("labels")),
        dg.define_asset_job("curriculum", selection=dg.AssetSelection.groups("mix", "tokens")),
    ],
    resources={
        "store": StoreResource(),
        "runner": RunnerResource(),
        "web_input": WebInputResource(),
        "crawler": CrawlResource(),
    },
)
