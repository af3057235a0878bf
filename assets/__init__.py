"""The Dagster code location: assets, resources and checks over the stage library.

Only this package imports dagster. Asset bodies stay short: they build stages,
hand them to the runner resource and turn the resulting manifest into metadata.
"""
