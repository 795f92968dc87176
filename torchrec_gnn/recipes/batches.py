"""How a job turns its config into data: the split with its shared graph, fanouts, degree
columns and the GraphBatchDataset of any examples.

Shared by the training recipes and by a finished run read back for scoring, so both build
batches by the same rules.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import torch.distributed as dist

from torchrec_gnn.config import ExperimentConfig
from torchrec_gnn.data.dataset import GraphRecDataset, Interactions
from torchrec_gnn.data.loader import BatchPlan, BatchSchema, GraphBatchBuilder, GraphBatchDataset, LinkTargets
from torchrec_gnn.data.registry import load_dataset
from torchrec_gnn.data.split import TimeSplit, streaming_graph, time_split
from torchrec_gnn.graph.degree import DegreeFeatures
from torchrec_gnn.graph.hetero_graph import HeteroGraph
from torchrec_gnn.graph.sampler import NeighborSampler, fanouts_by_relation
from torchrec_gnn.models.builder import ranker_sparse_features
from torchrec_gnn.modules.gnn import GNN_FAMILIES
from torchrec_gnn.train.distributed import DistributedContext
from torchrec_gnn.typing import EdgeType


def prepare_data(config: ExperimentConfig, ctx: DistributedContext, output_dir: Path) -> Tuple[GraphRecDataset, TimeSplit]:
    """Load the data set, split it by time and share its graph through a memory-mapped copy
    in ``output_dir/graph`` (built and saved by rank 0, mapped by every rank)."""
    dataset = load_dataset(config.data)
    fractions = (config.data.history_fraction, config.data.val_fraction, config.data.test_fraction)
    graph_dir = output_dir / "graph"
    if ctx.is_main:
        # A fresh graph: every edge with its time (temporal sampling shows each batch its past only).
        (streaming_graph(dataset) if config.fresh_graph else time_split(dataset, *fractions).graph).save(graph_dir)
    dist.barrier()
    # Every rank maps the same files: the topology is held once per host.
    split = time_split(dataset, *fractions, graph=HeteroGraph.load(graph_dir, mmap=True))
    return dataset, split


def configured_fanouts(config: ExperimentConfig, graph: HeteroGraph, train: bool = True) -> Dict[EdgeType, List[int]]:
    """The per-relation fanouts of ``loader.fanouts`` and ``loader.relation_fanouts``; for
    scoring (``train=False``) ``loader.eval_fanouts`` replaces every hop a relation samples."""
    fanouts = fanouts_by_relation(graph, config.loader.fanouts, config.loader.relation_fanouts)
    if train or config.loader.eval_fanouts is None:
        return fanouts
    return {et: [e if f != 0 else 0 for f, e in zip(hops, config.loader.eval_fanouts)] for et, hops in fanouts.items()}


def batch_fanouts(config: ExperimentConfig, graph: HeteroGraph, train: bool = True) -> Dict[EdgeType, List[int]]:
    """What the ranker's training (or scoring) batches sample: the hops its model reads
    (``ModelConfig.sampled_fanouts``)."""
    return config.model.sampled_fanouts(configured_fanouts(config, graph, train))


def node_degrees(config: ExperimentConfig, split: TimeSplit) -> Optional[DegreeFeatures]:
    """The degree columns of ``model.node_degree``, scaled on the graph as the training
    window opens (the same on every rank and in ``eval``); None when off."""
    if not (config.model.node_degree and config.model.use_graph):
        return None
    return DegreeFeatures.fit(split.graph, before=split.cutoffs["train"])


def batches(
    config: ExperimentConfig, graph: HeteroGraph, dataset: GraphRecDataset, examples: Interactions,
    train: bool, ctx: Optional[DistributedContext] = None, batch_size: Optional[int] = None,
    links_before: Optional[int] = None, degree: Optional[DegreeFeatures] = None,
) -> GraphBatchDataset:
    """The GraphBatchDataset of ``examples`` for this rank (one process without ``ctx``;
    ``batch_size`` overrides the config's). Training batches are shuffled (whole batches of
    consecutive examples on a fresh graph), except under the streaming protocol (time order, as
    a streaming trainer reads them); the edge objective's links are the graph's edges older than
    ``links_before`` when given; ``degree`` adds degree columns to an end-to-end tower's side features.
    Scoring batches sample ``loader.eval_fanouts`` where set.
    Training batches of a GNN that aggregates by sparse products carry their CSR arrays and
    transposes when :func:`prebuilds_csr` says so."""
    loader, model = config.loader, config.model
    sampler = NeighborSampler(graph, batch_fanouts(config, graph, train), replace=loader.replace, temporal=loader.temporal,
                              temporal_strategy=loader.temporal_strategy, labor=loader.labor)
    end_to_end = model.use_graph and not model.two_stage
    links = None
    if train and end_to_end and model.gfae.edge_objective:  # the edge objective's held-out history edges
        links = LinkTargets.from_graph(graph, dataset.user_type, dataset.item_type, model.gfae.edge_relation,
                                       model.gfae.edge_links_per_batch, model.gfae.edge_neg_ratio, links_before)
    schema = BatchSchema(dataset.user_type, dataset.item_type, graph.node_types,
                         list(ranker_sparse_features(dataset, model.ranker)))
    builder = GraphBatchBuilder(sampler, schema, node_features=dataset.node_features if end_to_end else None,
                                degree=degree if end_to_end else None, links=links,
                                csr=train and end_to_end and prebuilds_csr(config, ctx))
    plan = BatchPlan(batch_size=batch_size or (loader.batch_size if train else loader.eval_batch_size),
                     shuffle=train and config.train.protocol == "static", batch_by_time=config.fresh_graph,
                     drop_last=train, seed=config.train.seed, rank=ctx.rank if ctx else 0,
                     world_size=ctx.world_size if ctx else 1)
    return GraphBatchDataset(examples, builder, plan)


def prebuilds_csr(config: ExperimentConfig, ctx: Optional[DistributedContext] = None) -> bool:
    """Whether the loader's workers build the training batches' CSR arrays
    (``loader.prebuild_csr``; by default when ``ctx`` trains on a GPU) for a GNN that reads them."""
    wanted = config.loader.prebuild_csr
    if wanted is None:
        wanted = ctx is not None and ctx.device.type == "cuda"
    return wanted and GNN_FAMILIES[config.model.gnn.conv].reads_csr


def intra_op_threads(config: ExperimentConfig) -> int:
    """Threads per training process: this process's share of the cores (``LOCAL_WORLD_SIZE``
    processes share them), minus its loader workers; ``loader.num_threads`` when set."""
    if config.loader.num_threads is not None:
        return config.loader.num_threads
    local_ranks = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    cores = (os.cpu_count() or 1) // max(local_ranks, 1)
    return max(1, cores - config.loader.num_workers)
