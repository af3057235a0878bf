"""The stage library: the Stage protocol, runners, and the stages themselves.

Nothing here imports dagster; only the Spark runner imports pyspark.
"""
