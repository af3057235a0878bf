"""Taggers that label every document: language (119 canonical codes), domain,
quality, safety and heuristic signals, plus training and evaluation of their
fastText models. Labels are written as attribute shards beside the documents.

Nothing here imports dagster.
"""
