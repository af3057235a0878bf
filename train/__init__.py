"""The bundled training loop: a Qwen3 (dense and MoE) model trained on the S1/S2/S3 shards.

model.py (the network), presets.py (debug and report shapes), data.py (shard reader and
batches), curriculum.py (stages, WSD, ABF, YaRN), loop.py (training, checkpoints, CLI:
``python -m train.loop``), smoke.py (the ``model/smoke`` asset's entry point).
"""
