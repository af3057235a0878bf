"""The code location: everything Dagster loads (workspace.yaml, dg, dagster dev)."""

import dagster as dg

from assets import labels, web
from assets.resources import CrawlResource, RunnerResource, StoreResource, WebInputResource

defs = dg.Definitions(
    assets=dg.load_assets_from_modules([web, labels]),
    asset_checks=dg.load_asset_checks_from_modules([web, labels]),
    resources={
        "store": StoreResource(),
        "runner": RunnerResource(),
        "web_input": WebInputResource(),
        "crawler": CrawlResource(),
    },
)
