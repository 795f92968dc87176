"""recipes.batches: the loader config reaches the sampler and the batches it samples."""

import pytest
import torch

from torchrec_gnn.config import ConfigError, load_config
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


def test_scoring_batches_sample_eval_fanouts_and_training_batches_the_fanouts() -> None:
    """``loader.eval_fanouts`` [-1, -1] gives scoring batches every first-hop neighbour of their
    seeds (the neighbourhood export's full-graph inference reads); training batches keep
    ``loader.fanouts``, and a hop a relation skips in training stays skipped."""
    skipped = "user__friend__user"
    config = load_config(None, ["data.preset=tiny", "loader.fanouts=[2, 2]", "loader.eval_fanouts=[-1, -1]",
                                f"loader.relation_fanouts={{{skipped}: [2, 0]}}"])
    dataset = load_dataset(config.data)
    split = time_split(dataset)
    train, scoring = (batches(config, split.graph, dataset, split.train, train=t, batch_size=64) for t in (True, False))
    friend = next(et for et in split.graph.edge_types if "__".join(et) == skipped)
    assert train.builder.sampler.num_neighbors[friend] == [2, 0] and scoring.builder.sampler.num_neighbors[friend] == [-1, 0]
    assert {tuple(f) for et, f in scoring.builder.sampler.num_neighbors.items() if et != friend} == {(-1, -1)}
    watched = next(et for et in split.graph.edge_types if et[0] == dataset.item_type and et[2] == dataset.user_type)
    features = scoring[0].graph_features
    seeds = features.node_ids[dataset.user_type].values()[: features.num_sampled_nodes[dataset.user_type][0]]
    in_degree = split.graph.csc(watched).degree(seeds.numpy())
    assert features.num_sampled_edges[watched][0] == int(in_degree.sum()) > 2 * len(seeds)
    assert train[0].graph_features.num_sampled_edges[watched][0] <= 2 * len(seeds)


def test_eval_fanouts_need_one_fanout_per_layer_of_at_least_minus_one() -> None:
    with pytest.raises(ConfigError, match=r"loader.eval_fanouts gives 1 hop\(s\) but model.gnn.num_layers is 2"):
        load_config(None, ["loader.eval_fanouts=[-1]"])
    with pytest.raises(ConfigError, match=r"loader.eval_fanouts: each fanout must be >= -1 \(-1 = every neighbour\), got \[-3, -1\]"):
        load_config(None, ["loader.eval_fanouts=[-3, -1]"])
    assert load_config(None, ["loader.eval_fanouts=null"]).loader.eval_fanouts is None


def test_the_ranker_reads_only_its_sparse_features() -> None:
    """``model.ranker.sparse_features`` picks the ranker's tables and the batches' KJT keys
    alike, in the data set's order; the model trains on those batches."""
    from torchrec_gnn.models.builder import build_graph_dlrm

    config = load_config(None, ["data.preset=tiny", "model.ranker.sparse_features=[hour, video_category]"])
    dataset = load_dataset(config.data)
    split = time_split(dataset)
    batch = batches(config, split.graph, dataset, split.train, train=True, batch_size=64)[0]
    assert batch.sparse_features.keys() == ["video_category", "hour"]
    torch.manual_seed(0)
    model = build_graph_dlrm(dataset, split.graph, config.model)
    assert model.model.sparse_arch.sparse_feature_names == ["video_category", "hour"]
    losses, _ = model(batch)
    losses.sum().backward()
    table = model.model.sparse_arch.embedding_bag_collection.embedding_bags["t_hour"].weight
    assert table.grad is not None and bool(table.grad.abs().sum() > 0)


def test_unknown_ranker_sparse_features_are_refused() -> None:
    config = load_config(None, ["data.preset=tiny", "model.ranker.sparse_features=[hour, user_mood]"])
    dataset = load_dataset(config.data)
    with pytest.raises(ValueError, match=r"model.ranker.sparse_features: \['user_mood'\] not in data set 'synthetic'; "
                                         r"valid: \['user_id', 'video_id'"):
        batches(config, time_split(dataset).graph, dataset, dataset.examples, train=False)
    with pytest.raises(ConfigError, match="name at least one feature"):
        load_config(None, ["model.ranker.sparse_features=[]"])
