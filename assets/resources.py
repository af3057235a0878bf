"""Resources: the only switch between the embedded defaults and production.

Every field has an environment variable, so the same definitions run on the
bundled samples (no settings) or on a lab's data (settings in the environment or
in the launchpad's resource config):

    CORPUSMILL_STORE        where outputs land: a folder or s3://bucket/prefix
    CORPUSMILL_WARC_INPUT   WARC files: a folder, a file, s3://... or a paths list
    CORPUSMILL_PROCESSES    local runner processes (0 = one per core)
    CORPUSMILL_CRAWL_SEEDS  crawl seeds, comma-separated (none: crawl the bundled
                            sample site on 127.0.0.1, so the main job needs no network)
    CORPUSMILL_CRAWL_DOMAINS  allowed domains, comma-separated (default: the seeds' hosts)
    AWS_ENDPOINT_URL        endpoint of an S3-compatible store (MinIO, Ceph, R2 ...)
"""

import os
from pathlib import Path

import dagster as dg

from pipelines.runner import LocalRunner
from storage.layout import CorpusStore

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_STORE = str(PROJECT_ROOT / "data" / "store")
DEFAULT_WARC_INPUT = str(PROJECT_ROOT / "samples" / "warc")


class StoreResource(dg.ConfigurableResource):
    """The corpus store root: every asset writes ``<root>/<layer>/<name>/``."""

    root: str = os.environ.get("CORPUSMILL_STORE", DEFAULT_STORE)
    endpoint_url: str = os.environ.get("AWS_ENDPOINT_URL", "")

    def storage_options(self) -> dict:
        return (
            {"endpoint_url": self.endpoint_url}
            if self.endpoint_url and self.root.startswith("s3")
            else {}
        )

    def store(self) -> CorpusStore:
        return CorpusStore(self.root, self.storage_options())


class RunnerResource(dg.ConfigurableResource):
    """How stages run: the local process-pool runner (Spark comes in its own resource)."""

    processes: int = int(os.environ.get("CORPUSMILL_PROCESSES", "0"))

    def runner(self) -> LocalRunner:
        return LocalRunner(processes=self.processes)


class WebInputResource(dg.ConfigurableResource):
    """Where the raw web archives are."""

    warc_input: str = os.environ.get("CORPUSMILL_WARC_INPUT", DEFAULT_WARC_INPUT)
    endpoint_url: str = os.environ.get("AWS_ENDPOINT_URL", "")

    def storage_options(self) -> dict:
        return (
            {"endpoint_url": self.endpoint_url}
            if self.endpoint_url and self.warc_input.startswith("s3")
            else {}
        )


class CrawlResource(dg.ConfigurableResource):
    """What ``raw/crawl`` fetches. With no seeds it crawls the bundled sample site on
    127.0.0.1, which exercises the real crawler without touching the network."""

    seeds: str = os.environ.get("CORPUSMILL_CRAWL_SEEDS", "")
    allowed_domains: str = os.environ.get("CORPUSMILL_CRAWL_DOMAINS", "")
    max_depth: int = 2
    max_pages: int = 1000
    min_delay: float = 1.0

    def seed_list(self) -> tuple[str, ...]:
        return tuple(s.strip() for s in self.seeds.split(",") if s.strip())

    def domain_list(self) -> tuple[str, ...]:
        return tuple(s.strip() for s in self.allowed_domains.split(",") if s.strip())
