"""Sharding the model with TorchRec: planner constraints for node tables, DMP, optimizers.

Node tables live in an ``EmbeddingBagCollection`` fed one id per bag (see
:func:`~torchrec_gnn.data.batch.node_id_bags`), like the ranker's feature tables. Every table
is pinned to the fused kernel (the CPU DENSE kernel has no autograd) and to sharding types the
device can do; node tables may be further restricted by ``node_sharding_types``.
"""

from __future__ import annotations

from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import torch
import torch.distributed as dist
import torchrec
from torch import nn
from torch.distributed._shard.sharded_tensor import ShardedTensor
from torchrec.distributed.embeddingbag import EmbeddingBagCollectionSharder
from torchrec.distributed.model_parallel import DefaultDataParallelWrapper, DistributedModelParallel
from torchrec.distributed.planner import EmbeddingShardingPlanner, ParameterConstraints
from torchrec.distributed.planner.storage_reservations import FixedPercentageStorageReservation
from torchrec.distributed.planner.types import KernelConfig, TopologyFactory, TrainerConfig
from torchrec.distributed.types import ShardingPlan
from torchrec.modules.embedding_modules import EmbeddingBagCollection
from torchrec.optim.apply_optimizer_in_backward import apply_optimizer_in_backward
from torchrec.optim.keyed import CombinedOptimizer, KeyedOptimizerWrapper
from torchrec.optim.optimizers import in_backward_optimizer_filter

from torchrec_gnn.graph.hetero_graph import HeteroGraph
from torchrec_gnn.models.builder import node_table_name
from torchrec_gnn.modules.gnn_tower import GNNTower
from torchrec_gnn.train.config import TABLE_OPTIMIZER_NAMES, ShardingConfig

# Sharding types of an EmbeddingBagCollection on the fused kernel per device type
# (TORCHREC_FACTS.md): on CPU the planner would put small tables on data_parallel + DENSE, whose
# fbgemm lookup has no autograd kernel ("trying to backprop through it ... silently incorrect"),
# and it refuses row_wise.
EBC_SHARDING_TYPES = {
    "cpu": ("table_wise", "column_wise", "table_column_wise"),
    "cuda": ("table_wise", "row_wise", "column_wise", "table_column_wise"),
}
# Share of each device's memory the planner keeps free for dense parameters, activations and
# input batches (TorchRec's FixedPercentageStorageReservation; its own default is 15%).
STORAGE_RESERVED = 0.15
TABLE_OPTIMIZERS = dict(zip(TABLE_OPTIMIZER_NAMES, (torchrec.optim.RowWiseAdagrad, torch.optim.Adagrad, torch.optim.SGD)))


def node_pooling_factors(
    num_nodes: Dict[str, int],
    degrees: Dict[Tuple[str, str, str], float],
    fanouts: Dict[Tuple[str, str, str], Sequence[int]],
    seeds: Dict[str, int],
) -> Dict[str, float]:
    """Expected lookups per batch in each node table, from the fanouts (planner hints).

    Frontier sizes are propagated hop by hop, ``n_{h+1}[src] += n_h[dst] * min(fanout_h,
    mean in-degree)`` over every relation, each type capped at its node count (deduplication
    only makes the real count smaller).

    Args:
        num_nodes (Dict[str, int]): node count per type.
        degrees (Dict[EdgeType, float]): mean in-degree of each relation's destinations.
        fanouts (Dict[EdgeType, Sequence[int]]): neighbours per hop and relation (-1 = all).
        seeds (Dict[str, int]): seeds per batch and type (the batch's users and items).
    """
    frontier = {t: float(seeds.get(t, 0)) for t in num_nodes}
    total = dict(frontier)
    for hop in range(max((len(f) for f in fanouts.values()), default=0)):
        reached = {t: 0.0 for t in num_nodes}
        for (src, rel, dst), degree in degrees.items():
            fanout = fanouts[(src, rel, dst)][hop]
            reached[src] += frontier[dst] * (degree if fanout < 0 else min(float(fanout), degree))
        frontier = {t: min(reached[t], float(num_nodes[t])) for t in num_nodes}
        total = {t: min(total[t] + frontier[t], float(num_nodes[t])) for t in num_nodes}
    return {t: max(value, 1.0) for t, value in total.items()}


def table_constraints(
    model: nn.Module,
    sharding_types: Optional[Sequence[str]],
    device_type: str,
    pooling_factors: Optional[Dict[str, float]] = None,
) -> Dict[str, ParameterConstraints]:
    """Planner constraints for every table in ``model``: fused kernels and the sharding types
    ``device_type`` supports everywhere; node tables (a ``GNNTower``'s) only on
    ``sharding_types`` (default: all of those). ``pooling_factors`` (by node type, see
    :func:`node_pooling_factors`) become the node tables' planner hints: that many one-id bags
    per batch.

    Raises:
        ValueError: a sharding type the device cannot do, or two tables sharing a name.
    """
    allowed = list(EBC_SHARDING_TYPES.get(device_type, EBC_SHARDING_TYPES["cuda"]))
    sharding_types = allowed if sharding_types is None else list(sharding_types)
    bad = [s for s in sharding_types if s not in allowed]
    if bad or not sharding_types:
        raise ValueError(
            f"node_sharding_types {sharding_types}: {bad or 'empty'} not possible for node tables on {device_type}; "
            f"choose from {allowed}"
        )
    node_modules = [m.node_embeddings for m in model.modules() if isinstance(m, GNNTower)]
    node_tables = {c.name: c.feature_names[0] for m in node_modules for c in m.embedding_bag_configs()}
    feature_names = [
        c.name for m in model.modules()
        if isinstance(m, EmbeddingBagCollection) and not any(m is n for n in node_modules)
        for c in m.embedding_bag_configs()
    ]
    everything = [c.name for m in node_modules for c in m.embedding_bag_configs()] + feature_names
    duplicates = sorted({n for n in everything if everything.count(n) > 1})
    if duplicates:
        raise ValueError(f"table_constraints: table names {duplicates} are used twice; constraints need unique names")
    return {
        **{
            name: ParameterConstraints(
                sharding_types=sharding_types,
                compute_kernels=["fused"],
                **({"pooling_factors": [1.0], "batch_sizes": [max(1, round(pooling_factors[t]))]}
                   if pooling_factors and t in pooling_factors else {}),
            )
            for name, t in node_tables.items()
        },
        **{name: ParameterConstraints(sharding_types=allowed, compute_kernels=["fused"]) for name in feature_names},
    }


def _table_parameters(model: nn.Module) -> Iterable[nn.Parameter]:
    for module in model.modules():
        if isinstance(module, EmbeddingBagCollection):
            yield from module.parameters()


def shard_model(
    model: nn.Module,
    device: torch.device,
    config: ShardingConfig,
    process_group: Optional[dist.ProcessGroup] = None,
    pooling_factors: Optional[Dict[str, float]] = None,
) -> Tuple[DistributedModelParallel, ShardingPlan]:
    """Plan and shard every table of ``model`` with DistributedModelParallel.

    Order (as in TorchRec's DLRM launcher): fused in-backward optimizer on the tables, planner
    ``collective_plan`` over the world, then DMP. Dense parameters are wrapped in DDP with
    ``static_graph=False``, which GradNorm's ``autograd.grad`` before ``backward`` needs to keep
    the replicas in sync.

    Args:
        model (nn.Module): the unsharded model (tables may be on the meta device).
        device (torch.device): this rank's device.
        config (ShardingConfig): sharding types and table optimizer.
        process_group (ProcessGroup, optional): defaults to the world.
        pooling_factors (Dict[str, float], optional): expected ids per batch in each node
            table (:func:`node_pooling_factors`), so the planner sizes node tables' traffic.

    Returns:
        Tuple[DistributedModelParallel, ShardingPlan]: the sharded model and its plan.
    """
    optimizer = TABLE_OPTIMIZERS[config.table_optimizer]
    apply_optimizer_in_backward(optimizer, list(_table_parameters(model)), {"lr": config.table_lr})
    world_size = dist.get_world_size(process_group)
    local_world_size = int(torch.cuda.device_count()) if device.type == "cuda" else world_size
    topology = TopologyFactory.create_topology(
        TrainerConfig(world_size=world_size, local_world_size=min(local_world_size or 1, world_size)),
        kernel_config=KernelConfig(compute_device=device.type),
    )
    constraints = table_constraints(model, config.node_sharding_types, device.type, pooling_factors)
    sharders = [EmbeddingBagCollectionSharder()]
    # TorchRec's recommended policy: a fixed share of each device's memory kept free, instead of
    # the heuristic guess of the dense parameters' size (which it deprecates).
    planner = EmbeddingShardingPlanner(topology=topology, constraints=constraints,
                                       storage_reservation=FixedPercentageStorageReservation(STORAGE_RESERVED))
    plan = planner.collective_plan(model, sharders, process_group or dist.GroupMember.WORLD)
    dmp = DistributedModelParallel(
        module=model,
        device=device,
        plan=plan,
        sharders=sharders,
        data_parallel_wrapper=DefaultDataParallelWrapper(static_graph=False),
    )
    return dmp, plan


def make_optimizer(
    dmp: DistributedModelParallel, dense_lr: float, extra_parameters: Optional[Dict[str, nn.Parameter]] = None,
    module_lrs: Sequence[Tuple[nn.Module, float]] = (),
) -> CombinedOptimizer:
    """The tables' fused optimizer plus Adam on every dense parameter, as one KeyedOptimizer
    (one state dict for checkpoints, one ``step`` for the train pipeline). Adam runs its fused
    kernel: one pass over all dense parameters instead of several small ops per tensor.

    Args:
        dmp (DistributedModelParallel): the sharded model.
        dense_lr (float): Adam learning rate.
        extra_parameters (Dict[str, Parameter], optional): more dense parameters by name, e.g.
            ``{"balancer.log_vars": p}`` for a balancer learned by backward.
        module_lrs (Sequence[Tuple[Module, float]]): ``(module, lr)`` pairs: the dense parameters
            of each module train at its own rate (one Adam parameter group per rate), e.g.
            ``[(unwrap(dmp).model.graph_tower, 1e-3)]``; the first pair holding a parameter wins.
    """
    dense = dict(in_backward_optimizer_filter(dmp.named_parameters()))
    dense.update(extra_parameters or {})
    lr_of: Dict[int, float] = {}
    for module, lr in module_lrs:
        for parameter in module.parameters():
            lr_of.setdefault(id(parameter), lr)

    def adam(params: Sequence[nn.Parameter]) -> torch.optim.Optimizer:
        groups: Dict[float, List[nn.Parameter]] = {}
        for parameter in params:
            groups.setdefault(lr_of.get(id(parameter), dense_lr), []).append(parameter)
        return torch.optim.Adam([{"params": ps, "lr": lr} for lr, ps in groups.items()], lr=dense_lr, fused=True)

    return CombinedOptimizer([dmp.fused_optimizer, KeyedOptimizerWrapper(dense, adam)])


def configured_module_lrs(dmp: nn.Module, config: ShardingConfig) -> List[Tuple[nn.Module, float]]:
    """``make_optimizer``'s ``module_lrs`` of ``config``: the graph tower's dense parameters at
    ``config.tower_lr`` when the model has a tower and the rate is set."""
    tower = getattr(unwrap(dmp).model, "graph_tower", None)
    return [(tower, config.tower_lr)] if tower is not None and config.tower_lr is not None else []


def configured_optimizer(dmp: DistributedModelParallel, config: ShardingConfig,
                         extra_parameters: Optional[Dict[str, nn.Parameter]] = None) -> CombinedOptimizer:
    """:func:`make_optimizer` at the rates of ``config``: dense parameters at ``config.dense_lr``,
    the graph tower's at ``config.tower_lr`` (:func:`configured_module_lrs`)."""
    return make_optimizer(dmp, config.dense_lr, extra_parameters, configured_module_lrs(dmp, config))


def unwrap(model: nn.Module) -> nn.Module:
    """The user's module inside DMP/DDP wrappers."""
    while isinstance(model, (DistributedModelParallel, nn.parallel.DistributedDataParallel)):
        model = model.module
    return model


@torch.no_grad()
def copy_into_sharded(model: nn.Module, state: Mapping[str, torch.Tensor], prefix: str = "") -> None:
    """Copy unsharded tensors into a DMP model in place: ``state`` (e.g. a submodule's state
    dict, its keys under ``prefix`` in the model's) goes wholesale into replicated tensors and
    shard by shard into ``ShardedTensor`` tables (each rank fills its own local shards, which
    are views of the fused kernels' weights). Every rank calls it with the same ``state``.

    Raises:
        ValueError: a key of ``state`` has no entry in the model, or a shape differs.
    """
    target = model.state_dict()
    missing = [prefix + k for k in state if prefix + k not in target]
    if missing:
        raise ValueError(f"copy_into_sharded: the model has no {missing[:5]} ({len(missing)} keys missing)")
    for key, value in state.items():
        destination = target[prefix + key]
        if tuple(destination.shape) != tuple(value.shape):
            raise ValueError(f"copy_into_sharded: {prefix + key} has shape {tuple(destination.shape)}, "
                             f"the source {tuple(value.shape)}")
        if isinstance(destination, ShardedTensor):
            for shard in destination.local_shards():
                meta = shard.metadata
                rows = tuple(slice(o, o + n) for o, n in zip(meta.shard_offsets, meta.shard_sizes))
                shard.tensor.copy_(value[rows])
        else:
            destination.copy_(value)


@torch.no_grad()
def refresh_history(tower: nn.Module, graph: HeteroGraph, node_features: Mapping[str, torch.Tensor],
                    chunk_size: int = 8192) -> None:
    """Refill a GNN tower's history of the outer hop (:mod:`torchrec_gnn.modules.history`) from
    its current weights, the same on every rank (collective when distributed): rank 0 gathers
    the node tables' shards, runs the GNN's first L - 1 layers over the whole ``graph`` and
    broadcasts the result.

    Args:
        tower (nn.Module): a :class:`~torchrec_gnn.modules.gnn_tower.GNNTower` whose encoder has
            a history, sharded (inside DMP) or not.
        graph (HeteroGraph): the graph the batches are sampled from.
        node_features (Mapping[str, Tensor]): (N_t, F_t) side features of the typed nodes.
        chunk_size (int): destination nodes per inference step.
    """
    encoder, history = tower.encoder, tower.encoder.history
    if history is None:
        raise ValueError("refresh_history: the tower's encoder has no history (model.gnn.outer_hop is not 'history')")
    rank = dist.get_rank() if dist.is_initialized() else 0
    state = tower.node_embeddings.state_dict()
    tables: Dict[str, torch.Tensor] = {}
    for t in tower.node_types:
        weight = state[f"embedding_bags.{node_table_name(t)}.weight"]
        if isinstance(weight, ShardedTensor):
            shape = (history.num_nodes[t], encoder.gnn.in_channels)
            out = torch.empty(shape, device=history.cache(t).device) if rank == 0 else None
            weight.gather(dst=0, out=out)
            weight = out
        tables[t] = weight
    if rank == 0:
        rows = encoder.history_rows(tables, node_features, graph, chunk_size)
    else:  # filled by rank 0's broadcast below
        rows = {t: torch.empty_like(history.cache(t)) for t in history.num_nodes}
    if dist.is_initialized() and dist.get_world_size() > 1:
        for t in history.num_nodes:
            dist.broadcast(rows[t], src=0)
    history.load(rows)


def refresh_outer_hop(model: nn.Module, graph: HeteroGraph, node_features: Mapping[str, torch.Tensor]) -> bool:
    """:func:`refresh_history` of the graph tower of ``model`` (a ``GraphDLRMTrain``, inside DMP
    or not) if that tower has a history; returns whether it had one (all ranks call it)."""
    tower = unwrap(model).model.graph_tower
    if not isinstance(tower, GNNTower) or tower.encoder.history is None:
        return False
    refresh_history(tower, graph, node_features)
    return True
