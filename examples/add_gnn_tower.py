"""Add a GNN tower to a stock TorchRec DLRM, with both fusion levels, and train it end to end.

    python examples/add_gnn_tower.py [--model dlrm|dcn|projection]
    torchrun --standalone --nproc_per_node=2 examples/add_gnn_tower.py --model dcn

The diff against a plain TorchRec DLRM set-up is the block marked "the GNN tower": node tables
in an EmbeddingBagCollection (the batch gives it one node id per bag), a heterogeneous GNN over them, and ``GraphDLRM.from_dlrm``. Batches
come from ``GraphBatchDataset`` (a TorchRec ``Batch`` plus the sampled subgraph).
"""

import argparse

import torch
import torch.distributed as dist
from torchrec.models.dlrm import DLRM, DLRM_DCN, DLRM_Projection
from torchrec.modules.embedding_configs import EmbeddingBagConfig
from torchrec.modules.embedding_modules import EmbeddingBagCollection

from torchrec_gnn.console import configure_console
from torchrec_gnn.data.loader import GraphBatchDataset, make_dataloader
from torchrec_gnn.data.split import time_split
from torchrec_gnn.data.synthetic import SyntheticConfig, make_synthetic
from torchrec_gnn.graph.sampler import NeighborSampler
from torchrec_gnn.models.graph_dlrm import GraphDLRM, GraphDLRMTrain, RankerConfig
from torchrec_gnn.modules.gnn import GNNConfig, HeteroGNN
from torchrec_gnn.modules.gnn_tower import GNNTower, GraphEncoder
from torchrec_gnn.train.balancing import GradNorm
from torchrec_gnn.train.distributed import init_distributed
from torchrec_gnn.train.pipeline import BalancedTrainPipeline
from torchrec_gnn.train.sharding import ShardingConfig, make_optimizer, shard_model

D = 16


def stock_model(kind: str, ebc: EmbeddingBagCollection, dense_in: int) -> DLRM:
    """The user's TorchRec model: DLRM, DLRM_DCN or DLRM_Projection (from_dlrm keeps its interaction)."""
    common = dict(embedding_bag_collection=ebc, dense_in_features=dense_in, dense_arch_layer_sizes=[32, D],
                  over_arch_layer_sizes=[64, 1])
    if kind == "dcn":
        return DLRM_DCN(**common, dcn_num_layers=2, dcn_low_rank_dim=8)
    if kind == "projection":
        return DLRM_Projection(**common, interaction_branch1_layer_sizes=[4 * D], interaction_branch2_layer_sizes=[4 * D])
    return DLRM(**common)


def main(steps: int, kind: str) -> None:
    configure_console()
    ctx = init_distributed("auto")
    dataset = make_synthetic(SyntheticConfig.preset("tiny"))
    split = time_split(dataset)  # the graph holds only edges older than every example
    graph = split.graph

    # A stock TorchRec DLRM: one table per sparse feature, dense arch, over arch.
    ebc = EmbeddingBagCollection(
        tables=[EmbeddingBagConfig(name=f"t_{f}", num_embeddings=n, embedding_dim=D, feature_names=[f])
                for f, n in dataset.sparse_cardinality.items()],
        device=torch.device("meta"),
    )
    dlrm = stock_model(kind, ebc, len(dataset.dense_names))

    # --- the GNN tower: node tables (sharded like any table), a GNN, both fusion levels -------
    node_tables = EmbeddingBagCollection(
        tables=[EmbeddingBagConfig(name=f"node_{t}", num_embeddings=n, embedding_dim=D, feature_names=[t])
                for t, n in graph.num_nodes.items()],
        device=torch.device("meta"),
    )
    gnn = HeteroGNN(graph.node_types, graph.edge_types, D, GNNConfig(hidden_channels=32),
                    out_node_types=[dataset.user_type, dataset.item_type])
    tower = GNNTower(node_tables, GraphEncoder(gnn, dataset.user_type, dataset.item_type))
    model = GraphDLRMTrain(GraphDLRM.from_dlrm(dlrm, dataset.tasks, tower, RankerConfig(over_arch_layer_sizes=[64, 32])))
    # ------------------------------------------------------------------------------------------

    dmp, _ = shard_model(model, ctx.device, ShardingConfig())
    pipeline = BalancedTrainPipeline(dmp, make_optimizer(dmp, dense_lr=1e-3), GradNorm(len(model.loss_names)), ctx.device)
    batches = GraphBatchDataset(
        split.train, NeighborSampler(graph, [10, 5]), dataset.user_type, dataset.item_type, batch_size=256,
        node_types=graph.node_types, sparse_names=list(dataset.sparse_cardinality), shuffle=True,
        drop_last=True, rank=ctx.rank, world_size=ctx.world_size,
    )
    iterator = iter(make_dataloader(batches, num_workers=0))
    for step in range(1, min(steps, len(batches)) + 1):
        out = pipeline.progress(iterator)
        if ctx.is_main:
            losses = ", ".join(f"{n}={v:.3f}" for n, v in zip(model.loss_names, out.losses.tolist()))
            print(f"step {step}: total={float(out.total):.3f} | {losses}")
    dist.destroy_process_group()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--model", choices=["dlrm", "dcn", "projection"], default="dlrm",
                        help="the stock TorchRec model the tower is added to")
    args = parser.parse_args()
    main(args.steps, args.model)
