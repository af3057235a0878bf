"""``corpusmill``: the command line a data engineer starts from.

    corpusmill materialize [--select KEY ...]   run the asset graph (all of it by default)
    corpusmill ui                               open the Dagster UI on this code location
    corpusmill status                           what each output holds, from its manifest

Runs go to the Dagster instance in ``$DAGSTER_HOME`` (default: ``.dagster/`` in the
project), so a run started here shows up in the UI, and vice versa.
"""

import argparse
import os
import subprocess
import sys
import time

from assets.resources import PROJECT_ROOT


def _instance_home() -> str:
    home = os.environ.setdefault("DAGSTER_HOME", str(PROJECT_ROOT / ".dagster"))
    os.makedirs(home, exist_ok=True)
    cfg = os.path.join(home, "dagster.yaml")
    if not os.path.exists(cfg):
        with open(cfg, "w") as f:  # keep telemetry off on clusters without internet
            f.write("telemetry:\n  enabled: false\n")
    return home


def materialize(select: list[str]) -> int:
    home = _instance_home()
    import dagster as dg

    from assets.definitions import defs

    keys = [dg.AssetKey.from_user_string(s) for s in select] if select else None
    all_keys = defs.resolve_all_asset_keys()
    if keys:
        unknown = [k.to_user_string() for k in keys if k not in all_keys]
        if unknown:
            print(
                f"unknown asset keys: {unknown}; known: {sorted(k.to_user_string() for k in all_keys)}"
            )
            return 2
    job = defs.resolve_implicit_global_asset_job_def()
    t0 = time.perf_counter()
    with dg.DagsterInstance.get() as instance:
        result = job.execute_in_process(
            instance=instance,
            asset_selection=keys,
            raise_on_error=False,
            run_config={"loggers": {"console": {"config": {"log_level": "INFO"}}}},
        )
        print(
            f"\nrun {result.run_id} {'succeeded' if result.success else 'FAILED'} in "
            f"{time.perf_counter() - t0:.1f}s (instance: {home})"
        )
        for ev in result.get_asset_materialization_events():
            mat = ev.event_specific_data.materialization
            md = mat.metadata
            row = {k: md[k].value for k in ("records_in", "records_out", "quarantined") if k in md}
            print(
                f"  {mat.asset_key.to_user_string():20s} {row}  -> {md['path'].value if 'path' in md else ''}"
            )
        for ev in result.get_asset_check_evaluations():
            print(
                f"  check {ev.asset_key.to_user_string()}:{ev.check_name}: "
                f"{'passed' if ev.passed else 'FAILED'}"
            )
        failed_checks = [e for e in result.get_asset_check_evaluations() if not e.passed]
    return 0 if result.success and not failed_checks else 1


def status() -> int:
    from assets.resources import StoreResource
    from storage.manifest import ManifestError

    store = StoreResource().store()
    for key in ("raw/warc_files", "text/web", "dedup/web_exact"):
        out = store.output(key)
        try:
            m = out.manifest()
        except ManifestError:
            print(f"{key:20s} not materialised")
            continue
        print(
            f"{key:20s} {m.rows:>9} rows {m.bytes:>12} bytes {m.quarantined:>7} quarantined  {out.uri}"
        )
    return 0


def ui(port: int) -> int:
    _instance_home()
    cmd = [
        sys.executable,
        "-m",
        "dagster",
        "dev",
        "-w",
        str(PROJECT_ROOT / "workspace.yaml"),
        "-p",
        str(port),
    ]
    return subprocess.call(cmd, cwd=PROJECT_ROOT)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="corpusmill", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("materialize", help="materialise assets (default: the whole graph)")
    m.add_argument("--select", nargs="*", default=[], help="asset keys, e.g. text/web")
    u = sub.add_parser("ui", help="start the Dagster UI (dagster dev)")
    u.add_argument("--port", type=int, default=3000)
    sub.add_parser("status", help="summarise every output's manifest")
    args = p.parse_args(argv)
    if args.cmd == "materialize":
        return materialize(args.select)
    if args.cmd == "ui":
        return ui(args.port)
    return status()


if __name__ == "__main__":
    sys.exit(main())
