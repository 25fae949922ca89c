"""The ``dask`` compute target: step notebooks run on the workers of a Dask cluster."""
