"""Cohorts: `tucker-segment batch` over many CTs on a Dask cluster (local or a user's own)."""
