"""Spark execution of the corpus stages: the only package in the project that imports pyspark.

session.py     ``SparkSettings`` (the one setting: master, memory, retries, store URLs),
               the session it builds, live progress from the status tracker
runner.py      ``SparkRunner``: any Stage, one Spark task per part, the local runner's bytes
components.py  connected components in Spark (large-star / small-star)
minhash.py     ``spark_minhash_dedup``: the corpus-wide fuzzy dedup, the local kept set
"""
