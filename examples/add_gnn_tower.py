"""Add a GNN tower to a stock TorchRec model, with both fusion levels, train it end to end and score it.

    python examples/add_gnn_tower.py [--model dlrm|dcn|projection|deepfm] [--no-tower]
    torchrun --standalone --nproc_per_node=2 examples/add_gnn_tower.py --model deepfm
    python examples/add_gnn_tower.py --model dcn --preset default --batch-size 1024 --json dcn.json

Two routes, each marked "the GNN tower" below:

* any model that consumes pooled sparse features (here TorchRec's ``SimpleDeepFMNN``): the
  tower's output joins the ``EmbeddingBagCollection``'s ``KeyedTensor`` as two more features
  (``GraphEmbeddings.join``), and the pre-head fusion sits in front of the model's task heads;
* a TorchRec DLRM (``DLRM``, ``DLRM_DCN``, ``DLRM_Projection``): ``GraphDLRM.from_dlrm``, which
  keeps the model's tables, dense arch and kind of interaction.

Batches come from ``GraphBatchDataset`` (a TorchRec ``Batch`` plus the sampled subgraph); the
examples after the graph's cutoff are split by time into train, validation and test. ``--no-tower``
trains the same model without the graph, the baseline the tower has to beat.
"""

import argparse
import json
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn
from torchrec.models.deepfm import FMInteractionArch, SimpleDeepFMNN
from torchrec.models.dlrm import DLRM, DLRM_DCN, DLRM_Projection
from torchrec.modules.embedding_configs import EmbeddingBagConfig
from torchrec.modules.embedding_modules import EmbeddingBagCollection
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from torchrec_gnn.console import configure_console
from torchrec_gnn.data.batch import GraphFeatures
from torchrec_gnn.data.dataset import GraphRecDataset, Interactions, TaskSpec
from torchrec_gnn.data.loader import BatchPlan, BatchSchema, GraphBatchBuilder, GraphBatchDataset, make_dataloader, pad_for_ranks
from torchrec_gnn.data.split import time_split
from torchrec_gnn.data.synthetic import SyntheticConfig, make_synthetic
from torchrec_gnn.graph.hetero_graph import HeteroGraph
from torchrec_gnn.graph.sampler import NeighborSampler
from torchrec_gnn.models.graph_dlrm import GraphDLRM, GraphDLRMTrain, RankerConfig
from torchrec_gnn.modules.fusion import ConcatFusionArch, InputFusionArch
from torchrec_gnn.modules.gnn import GNNConfig, HeteroSAGE
from torchrec_gnn.modules.gnn_tower import GNNTower, GraphEncoder
from torchrec_gnn.modules.heads import TaskHeadsArch, initial_output_bias
from torchrec_gnn.train.evaluation import evaluate_batches
from torchrec_gnn.train.balancing import GradNorm
from torchrec_gnn.train.distributed import DistributedContext, close_distributed, init_distributed
from torchrec_gnn.train.metrics import format_table
from torchrec_gnn.train.pipeline import BalancedTrainPipeline
from torchrec_gnn.train.sharding import ShardingConfig, make_optimizer, shard_model, unwrap

D = 16
MODELS = ("dlrm", "dcn", "projection", "deepfm")


class MultiTaskDeepFM(nn.Module):
    """A user's TorchRec ``SimpleDeepFMNN`` made multi-task, with an optional GNN tower through the
    generic route.

    The model's sparse and dense arches are reused as they are. With a tower, its two embeddings,
    projected to the features' width D, join the pooled sparse features as two more features of
    the FM and deep interaction (the input-level fusion; the interaction is rebuilt with the same
    deep dimension, sized for them),
    and :class:`ConcatFusionArch` puts them next to the interaction's output in front of the task
    heads (the pre-head fusion). The model's single sigmoid output becomes one head per task.

    Args:
        deepfm (SimpleDeepFMNN): the user's model.
        tasks (Sequence[TaskSpec]): the T tasks.
        graph_tower (GNNTower, optional): the tower; None gives the same model without the graph.
        head_layer_sizes (List[int]): hidden sizes of each task head.

    ``forward(dense_features, sparse_features, graph_features)`` is GraphDLRM's contract: it
    returns the outputs (B, T) and the tower's auxiliary
    losses (A,), so :class:`GraphDLRMTrain` and :class:`BalancedTrainPipeline` train it as they are.
    """

    def __init__(self, deepfm: SimpleDeepFMNN, tasks: Sequence[TaskSpec], graph_tower: Optional[GNNTower],
                 head_layer_sizes: Sequence[int] = (32,)) -> None:
        super().__init__()
        self.tasks = list(tasks)
        self.sparse_arch, self.dense_arch = deepfm.sparse_arch, deepfm.dense_arch
        self.graph_tower = graph_tower
        self.aux_loss_names: List[str] = graph_tower.aux_loss_names if graph_tower is not None else []
        names = list(deepfm.inter_arch.sparse_feature_names)
        deep_fm_dimension = deepfm.inter_arch.deep_fm.dense_module[0].out_features
        fm_in_features = (len(names) + 1) * D
        # The graph embeddings enter the FM at the features' width D, through a learned projection.
        self.input_fusion = InputFusionArch(graph_tower.out_channels, D) if graph_tower is not None else None
        if graph_tower is not None:
            names += ["graph_user", "graph_item"]
            fm_in_features += 2 * D
        self.inter_arch = FMInteractionArch(fm_in_features, names, deep_fm_dimension)
        representation = D + deep_fm_dimension + 1  # dense, deep interaction, FM term
        self.prehead_fusion = (ConcatFusionArch(graph_tower.out_channels, representation)
                               if graph_tower is not None else None)
        head_in = self.prehead_fusion.out_channels if self.prehead_fusion is not None else representation
        self.task_heads = TaskHeadsArch(head_in, self.tasks, list(head_layer_sizes))

    def shared_parameters(self) -> List[nn.Parameter]:
        """GradNorm's shared layer: the GNN's last layer, else the deep interaction's layer."""
        shared = self.graph_tower.shared_parameters() if self.graph_tower is not None else []
        return shared or list(self.inter_arch.deep_fm.dense_module.parameters())

    def forward(self, dense_features: torch.Tensor, sparse_features: KeyedJaggedTensor,
                graph_features: GraphFeatures) -> Tuple[torch.Tensor, torch.Tensor]:
        dense = self.dense_arch(dense_features)  # (B, D)
        pooled = self.sparse_arch(sparse_features)  # KeyedTensor, F features
        aux_losses = dense.new_zeros(0)
        if self.graph_tower is not None:
            graph = self.graph_tower(graph_features)
            pooled = graph.join(pooled, projection=self.input_fusion)  # F + 2 features: input-level fusion
            aux_losses = graph.aux_losses(self.aux_loss_names)
        representation = self.inter_arch(dense, pooled)  # (B, D + deep_fm_dimension + 1)
        if self.prehead_fusion is not None:
            representation = self.prehead_fusion(representation, graph.user, graph.item)  # pre-head fusion
        return self.task_heads(representation), aux_losses


def stock_model(kind: str, ebc: EmbeddingBagCollection, dense_in: int) -> nn.Module:
    """The user's TorchRec model, single-task as TorchRec ships it."""
    if kind == "deepfm":
        return SimpleDeepFMNN(num_dense_features=dense_in, embedding_bag_collection=ebc, hidden_layer_size=32,
                              deep_fm_dimension=16)
    common = dict(embedding_bag_collection=ebc, dense_in_features=dense_in, dense_arch_layer_sizes=[32, D],
                  over_arch_layer_sizes=[64, 1])
    if kind == "dcn":
        return DLRM_DCN(**common, dcn_num_layers=2, dcn_low_rank_dim=8)
    if kind == "projection":
        return DLRM_Projection(**common, interaction_branch1_layer_sizes=[4 * D], interaction_branch2_layer_sizes=[4 * D])
    return DLRM(**common)


def graph_tower(dataset: GraphRecDataset, graph: HeteroGraph) -> GNNTower:
    """Node tables (sharded like any table) and a heterogeneous GNN over them."""
    node_tables = EmbeddingBagCollection(
        tables=[EmbeddingBagConfig(name=f"node_{t}", num_embeddings=n, embedding_dim=D, feature_names=[t])
                for t, n in graph.num_nodes.items()],
        device=torch.device("meta"),
    )
    gnn = HeteroSAGE(graph.node_types, graph.edge_types, D, GNNConfig(hidden_channels=32),
                    out_node_types=[dataset.user_type, dataset.item_type])
    return GNNTower(node_tables, GraphEncoder(gnn, dataset.user_type, dataset.item_type))


def build_model(kind: str, dataset: GraphRecDataset, graph: HeteroGraph, use_tower: bool) -> GraphDLRMTrain:
    """The stock model of ``kind`` over the data's sparse features, with or without the tower."""
    # A stock TorchRec model: one table per sparse feature, dense arch, interaction, over arch.
    ebc = EmbeddingBagCollection(
        tables=[EmbeddingBagConfig(name=f"t_{f}", num_embeddings=n, embedding_dim=D, feature_names=[f])
                for f, n in dataset.sparse_cardinality.items()],
        device=torch.device("meta"),
    )
    stock = stock_model(kind, ebc, len(dataset.dense_names))

    # --- the GNN tower: the generic route (any model) or the DLRM shortcut -----------------------
    tower = graph_tower(dataset, graph) if use_tower else None
    if kind == "deepfm":
        return GraphDLRMTrain(MultiTaskDeepFM(stock, dataset.tasks, tower))
    return GraphDLRMTrain(GraphDLRM.from_dlrm(stock, dataset.tasks, tower, RankerConfig(over_arch_layer_sizes=[64, 32])))
    # ----------------------------------------------------------------------------------------------


def batches(examples: Interactions, dataset: GraphRecDataset, graph: HeteroGraph, batch_size: int, train: bool,
            ctx: DistributedContext, seed: int) -> GraphBatchDataset:
    """This rank's batches of ``examples``, each with its sampled subgraph."""
    schema = BatchSchema(dataset.user_type, dataset.item_type, graph.node_types, list(dataset.sparse_cardinality))
    plan = BatchPlan(batch_size, shuffle=train, drop_last=train, seed=seed, rank=ctx.rank, world_size=ctx.world_size)
    return GraphBatchDataset(examples, GraphBatchBuilder(NeighborSampler(graph, [10, 5]), schema), plan)


@torch.no_grad()
def evaluate(model: nn.Module, examples: Interactions, dataset: GraphRecDataset, graph: HeteroGraph,
             batch_size: int, ctx: DistributedContext) -> Dict[str, Dict[str, float]]:
    """Every task's metrics on ``examples``, the same on every rank."""
    model.eval()
    examples = pad_for_ranks(examples, batch_size, ctx.world_size)  # label-less padding: every rank, same steps
    loader = make_dataloader(batches(examples, dataset, graph, batch_size, False, ctx, 0), num_workers=0)
    metrics, _ = evaluate_batches(model, loader, dataset.tasks, dataset.user_type, ctx.device)  # GAUC per global user
    model.train()
    return metrics


def main(kind: str, use_tower: bool, preset: str, epochs: int, steps: Optional[int], batch_size: int, seed: int,
         json_path: Optional[str]) -> Dict[str, Dict[str, Dict[str, float]]]:
    configure_console()
    ctx = init_distributed("auto")
    torch.manual_seed(seed)
    dataset = make_synthetic(SyntheticConfig.preset(preset))  # the same data for every --seed
    split = time_split(dataset)  # the graph holds only edges older than every example
    graph = split.graph

    model = build_model(kind, dataset, graph, use_tower)
    dmp, _ = shard_model(model, ctx.device, ShardingConfig())  # one planner: the model's and the node tables
    heads = unwrap(dmp).model.task_heads  # every head starts from the constant best of the training labels
    heads.init_output_bias(initial_output_bias(split.train.labels.nan_to_num(0.0), ~split.train.labels.isnan(),
                                               dataset.tasks).to(ctx.device))
    pipeline = BalancedTrainPipeline(dmp, make_optimizer(dmp, dense_lr=1e-3), GradNorm(len(model.loss_names)), ctx.device)
    train_batches = batches(split.train, dataset, graph, batch_size, True, ctx, seed)
    budget = steps if steps is not None else epochs * len(train_batches)
    step = 0
    for epoch in range(epochs):
        train_batches.set_epoch(epoch)
        iterator = iter(make_dataloader(train_batches, num_workers=0))
        for _ in range(min(len(train_batches), budget - step)):
            out = pipeline.progress(iterator)
            step += 1
            if ctx.is_main and (step <= 10 or step % 50 == 0):
                losses = ", ".join(f"{n}={v:.3f}" for n, v in zip(model.loss_names, out.losses.tolist()))
                print(f"step {step}: total={float(out.total):.3f} | {losses}", flush=True)

    trained = pipeline.detach()
    metrics = {name: evaluate(trained, examples, dataset, graph, 1024, ctx)
               for name, examples in (("val", split.val), ("test", split.test))}
    if ctx.is_main:
        title = f"{kind} {'with' if use_tower else 'without'} the GNN tower, {step} steps"
        for name, split_metrics in metrics.items():
            print(format_table(split_metrics, title=f"{title}: {name}"))
        if json_path:
            with open(json_path, "w") as f:
                json.dump({"model": kind, "tower": use_tower, "preset": preset, "seed": seed, "steps": step,
                           "batch_size": batch_size, "world_size": ctx.world_size, "metrics": metrics}, f, indent=1)
    close_distributed()  # a barrier, then the group destroyed
    return metrics


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=MODELS, default="dlrm", help="the stock TorchRec model the tower is added to")
    parser.add_argument("--no-tower", action="store_true", help="train the same model without the graph")
    parser.add_argument("--preset", default="tiny", help="synthetic data preset: tiny (seconds) or default")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--steps", type=int, default=None, help="stop after this many steps (default: every epoch)")
    parser.add_argument("--batch-size", type=int, default=256, help="examples per rank and step")
    parser.add_argument("--seed", type=int, default=0, help="seeds the data, the model and the batch order")
    parser.add_argument("--json", default=None, help="also write the validation and test metrics here")
    args = parser.parse_args()
    main(args.model, not args.no_tower, args.preset, args.epochs, args.steps, args.batch_size, args.seed, args.json)
