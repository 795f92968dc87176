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


def test_the_loader_prebuilds_csr_on_a_gpu_or_when_asked_for_a_sparse_product_gnn() -> None:
    from torchrec_gnn.recipes.batches import prebuilds_csr
    from torchrec_gnn.train.distributed import DistributedContext

    def ctx(device: str) -> DistributedContext:
        return DistributedContext(rank=0, world_size=1, local_rank=0, device=torch.device(device), backend="gloo")

    default = load_config(None, [])
    assert not prebuilds_csr(default) and not prebuilds_csr(default, ctx("cpu")) and prebuilds_csr(default, ctx("cuda"))
    assert prebuilds_csr(load_config(None, ["loader.prebuild_csr=true"]), ctx("cpu"))
    assert not prebuilds_csr(load_config(None, ["loader.prebuild_csr=false"]), ctx("cuda"))
    assert not prebuilds_csr(load_config(None, ["loader.prebuild_csr=true", "model.gnn.conv=gat"]), ctx("cuda"))
