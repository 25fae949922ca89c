"""Reading tabular folders (CSV, Parquet) as pandas DataFrames, for datasets and inputs."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from mlpipe_jupyter.errors import DatasetError

if TYPE_CHECKING:
    import pandas as pd

TABULAR_SUFFIXES = (".csv", ".parquet", ".pq")


def read_tabular_folder(path: Path, what: str) -> pd.DataFrame:
    """Every CSV/Parquet file under ``path`` (a file or a folder), concatenated in name order."""
    import pandas as pd  # imported here: pandas costs ~0.3 s and most commands never need it

    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    tables = [p for p in files if p.suffix.lower() in TABULAR_SUFFIXES]
    if not tables:
        raise DatasetError(f"{what} has no CSV or Parquet files to read as a table ({path})")
    frames = [
        pd.read_csv(p) if p.suffix.lower() == ".csv" else pd.read_parquet(p) for p in tables
    ]
    return frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)
