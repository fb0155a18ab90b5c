"""The Dagster layer: resources, assets, checks, jobs (and later schedules)."""
