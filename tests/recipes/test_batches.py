"""recipes.batches: the loader config reaches the sampler and the batches it samples."""

import torch

from torchrec_gnn.config import load_config
from torchrec_gnn.data.registry import load_dataset
from torchrec_gnn.data.split import time_split
from torchrec_gnn.recipes.batches import batches


def test_loader_sampling_knobs_reach_the_sampler() -> None:
    """``loader.labor`` and the fanouts configure the batches' sampler; LABOR batches on the tiny
    data hold fewer distinct nodes than uniform ones for the same examples and fanouts."""
    nodes = {}
    for labor in (False, True):
        config = load_config(None, ["data.preset=tiny", f"loader.labor={str(labor).lower()}", "loader.fanouts=[10, 10]"])
        dataset = load_dataset(config.data)
        split = time_split(dataset)
        data = batches(config, split.graph, dataset, split.train, train=False, batch_size=256)
        sampler = data.builder.sampler
        assert sampler.labor is labor and set(map(tuple, sampler.num_neighbors.values())) == {(10, 10)}
        nodes[labor] = sum(sum(data[i].graph_features.num_nodes.values()) for i in range(len(data)))
    assert nodes[True] < nodes[False]
    assert torch.equal(data[0].dense_features, split.train.dense[:256])  # the same examples, in order
