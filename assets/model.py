"""``model/smoke``: the shards prove themselves by training the debug Qwen3 on CPU.

Trains the ``qwen3_debug`` preset through S1 -> S2 -> S3 of ``tokens/`` (RoPE base
10,000 -> 1,000,000 at S3) for a few hundred steps and records the loss curve as a
plot in the metadata. On a CPU it trains on the first ``window`` tokens of each
sequence so the run fits in the main job; train/loop.py is the real trainer.
"""

import base64
from pathlib import Path

import dagster as dg

from assets.resources import StoreResource
from train.smoke import smoke_train

SMOKE = dg.AssetKey(["model", "smoke"])
TOKEN_STAGES = [dg.AssetKey(["tokens", s]) for s in ("s1", "s2", "s3")]


class SmokeConfig(dg.Config):
    steps: int = 200
    window: int = 128  # tokens of each sequence trained on (0: whole sequences)
    tokens_per_micro: int = 256


@dg.asset(key=SMOKE, deps=TOKEN_STAGES, group_name="model", kinds={"pytorch"})
def model_smoke(
    context: dg.AssetExecutionContext, config: SmokeConfig, store: StoreResource
) -> dg.MaterializeResult:
    """A smoke training run of the debug preset on the exported shards."""
    corpus = store.store()
    if not corpus.fs.is_local:
        raise ValueError(
            "model/smoke reads the shards with np.memmap: use a local CORPUSMILL_STORE"
        )
    tokens_root = corpus.fs.path("tokens")
    out_dir = Path(corpus.fs.path("model", "smoke"))
    result = smoke_train(
        tokens_root,
        out_dir,
        steps=config.steps,
        tokens_per_micro=config.tokens_per_micro,
        window=config.window,
    )
    losses = result["losses"]
    png = Path(result["plot"]).read_bytes()
    context.log.info(f"smoke run: loss {losses[0]:.3f} -> {losses[-1]:.3f} in {len(losses)} steps")
    return dg.MaterializeResult(
        metadata={
            "loss_curve": dg.MetadataValue.md(
                f"![loss curve](data:image/png;base64,{base64.b64encode(png).decode()})"
            ),
            "loss_curve_png": dg.MetadataValue.path(result["plot"]),
            "first_loss": dg.MetadataValue.float(float(losses[0])),
            "final_loss": dg.MetadataValue.float(float(result["final_loss"])),
            "steps": dg.MetadataValue.int(len(losses)),
            "tokens_per_s": dg.MetadataValue.float(round(float(result["tokens_per_s"]), 1)),
            "checkpoint": dg.MetadataValue.path(str(result["checkpoint"])),
        }
    )


@dg.asset_check(asset=SMOKE, description="The loss fell: the shards feed a real training loop.")
def smoke_loss_falls(store: StoreResource) -> dg.AssetCheckResult:
    import json

    log = Path(store.store().fs.path("model", "smoke", "log.jsonl"))
    if not log.exists():
        return dg.AssetCheckResult(passed=False, description=f"no training log at {log}")
    losses = [json.loads(line)["loss"] for line in log.read_text().splitlines() if line.strip()]
    head, tail = losses[: max(1, len(losses) // 10)], losses[-max(1, len(losses) // 10) :]
    first, last = sum(head) / len(head), sum(tail) / len(tail)
    return dg.AssetCheckResult(passed=last < 0.9 * first, metadata={"first": first, "last": last})
