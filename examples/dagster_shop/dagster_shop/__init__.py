"""A web shop's analytics pipeline on Dagster: see README.md."""
