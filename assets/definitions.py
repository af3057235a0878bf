"""The code location: everything Dagster loads (workspace.yaml, dg, dagster dev)."""

import dagster as dg

from assets import web
from assets.resources import CrawlResource, RunnerResource, StoreResource, WebInputResource

defs = dg.Definitions(
    assets=dg.load_assets_from_modules([web]),
    asset_checks=dg.load_asset_checks_from_modules([web]),
    resources={
        "store": StoreResource(),
        "runner": RunnerResource(),
        "web_input": WebInputResource(),
        "crawler": CrawlResource(),
    },
)
