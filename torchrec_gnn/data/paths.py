"""Where the datasets live: ``$TORCHREC_GNN_DATA_DIR``, else ``<repo>/../shared/data``.

The data are licensed for use here but not for redistribution, so they are never copied into
the repository; loaders and tests take their paths from :func:`default_data_dir`.
"""

from __future__ import annotations

import os
from pathlib import Path

DATA_DIR_ENV = "TORCHREC_GNN_DATA_DIR"


def default_data_dir() -> Path:
    """Root folder of the datasets (``ml-100k-recbole/``, ``kuairand-1k-tiny-fixture/``, ...).

    Returns ``$TORCHREC_GNN_DATA_DIR`` when set, else ``shared/data`` next to the repository root.
    The folder is not required to exist: callers check the files they need.
    """
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        return Path(env).expanduser()
    # parents: [0] data/, [1] torchrec_gnn/, [2] repository root
    return Path(__file__).resolve().parents[2].parent / "shared" / "data"
