"""Load the data set a :class:`~torchrec_gnn.config.DataConfig` names."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from torchrec_gnn.data.dataset import GraphRecDataset
from torchrec_gnn.data.kuairand import load_kuairand
from torchrec_gnn.data.movielens import load_movielens
from torchrec_gnn.data.paths import default_data_dir
from torchrec_gnn.data.random_data import make_random
from torchrec_gnn.data.synthetic import make_synthetic
from torchrec_gnn.data.tabular import load_tabular

if TYPE_CHECKING:
    from torchrec_gnn.config import DataConfig

KUAIRAND_FIXTURE = "kuairand-1k-tiny-fixture/kuairand_sample.csv"


def load_dataset(config: "DataConfig") -> GraphRecDataset:
    """The data set of ``config``; file-based ones default to the shared data directory.

    Args:
        config (DataConfig): ``dataset``, ``path``, ``preset``, ``synthetic`` and ``random``
            overrides, and ``seed`` (of the synthetic and random generators and of MovieLens
            negative sampling, unless ``synthetic``/``random`` set their own ``seed``).
    """
    seed = config.seed
    if config.dataset == "synthetic":
        return make_synthetic(config.synthetic_config())
    if config.dataset == "random":
        return make_random(config.random_config())
    if config.dataset == "ml100k":
        path = Path(config.path) if config.path else default_data_dir() / "ml-100k-recbole"
        return load_movielens(path, negatives_per_positive=config.negatives_per_positive, seed=seed)
    if config.dataset == "kuairand":
        return load_kuairand(Path(config.path) if config.path else default_data_dir() / KUAIRAND_FIXTURE)
    if config.path is None:
        raise ValueError("data.path: the 'tabular' data set needs the directory of your tables (see torchrec_gnn.data.tabular)")
    return load_tabular(config.path)
