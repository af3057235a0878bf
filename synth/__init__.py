"""Synthetic data and model backends: the model client (OpenAI-compatible endpoint,
vLLM) shared by LLM annotation, PDF OCR and synthesis; generators and sandboxed
execution come with the synthesis issue.

Nothing here imports dagster; vLLM is imported lazily so CPU machines import fine.
"""
