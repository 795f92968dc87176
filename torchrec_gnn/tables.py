"""Reading CSV / Parquet tables at the data boundary, with errors that name the file and column."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

TABLE_SUFFIXES = (".csv", ".parquet")
EDGE_COLUMNS = ("src", "dst", "time", "weight")


def read_table(path: Path) -> pd.DataFrame:
    """Read a ``.csv[.gz]`` or ``.parquet`` table."""
    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    return pd.read_csv(path)


def require_columns(file: str, frame: pd.DataFrame, columns: Sequence[str]) -> None:
    """Raise ``ValueError`` naming ``file``, the missing columns and the columns found."""
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{file}: missing column(s) {missing}; columns found: {list(frame.columns)}")


def check_no_missing_values(values: pd.Series, where: str) -> None:
    """Raise ``ValueError`` naming ``where``, the count and the first row of empty cells."""
    missing = values.isna().to_numpy()
    if missing.any():
        raise ValueError(f"{where} has {int(missing.sum())} empty value(s), first at row {int(np.argmax(missing))}")


def read_edge_table(path: Path, file: str) -> pd.DataFrame:
    """Read one relation's edges: columns ``src, dst[, time][, weight]``, no other column, no
    empty ``src`` / ``dst`` / ``time`` cell; errors name ``file``."""
    frame = read_table(path)
    require_columns(file, frame, ["src", "dst"])
    extra = [c for c in frame.columns if c not in EDGE_COLUMNS]
    if extra:
        raise ValueError(f"{file}: unknown column(s) {extra}; edge tables have columns {list(EDGE_COLUMNS)}")
    for column in frame.columns.intersection(["src", "dst", "time"]):
        kind = "column" if column == "time" else "id column"
        check_no_missing_values(frame[column], f"{file}: {kind} {column!r}")
    return frame
