"""Turn examples + graph + sampler into GraphBatches, inside DataLoader workers.

Each item of :class:`GraphBatchDataset` is a whole batch: the DataLoader runs with
``batch_size=None`` and every worker builds complete :class:`GraphBatch` objects (slice the
examples, sample one deduplicated subgraph for the batch's users and items, gather ids and side
features). Randomness is keyed on ``(seed, epoch, batch number)``, so the batches do not depend
on how many workers built them or in which order.
"""

from __future__ import annotations

from typing import Dict, Optional, Sequence

import numpy as np
import torch
from torch.autograd.profiler import record_function
from torch.utils.data import DataLoader, Dataset, get_worker_info
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from torchrec_gnn.data.batch import GraphBatch
from torchrec_gnn.data.dataset import Interactions, NodeType
from torchrec_gnn.graph.sampler import NeighborSampler


def _generator(*key: int) -> torch.Generator:
    """A torch.Generator seeded from an integer key (stable across processes)."""
    state = np.random.SeedSequence([int(k) for k in key]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


class GraphBatchDataset(Dataset):
    """Map-style dataset whose item ``i`` is the ``i``-th :class:`GraphBatch` of this rank.

    Args:
        examples (Interactions): the examples to serve (one split).
        sampler (NeighborSampler): samples each batch's subgraph.
        user_type (str): node type of ``examples.user``.
        item_type (str): node type of ``examples.item``.
        batch_size (int): B, examples per batch.
        node_types (Sequence[str]): keys of ``node_ids``, in the order the node tables expect
            (every type, even when a batch samples none of it).
        sparse_names (Sequence[str]): keys of ``sparse_features``, in ranker order.
        node_features (Dict[str, Tensor]): optional (num_nodes[t], F_t) side features to
            gather for the sampled nodes.
        shuffle (bool): reshuffle examples every epoch (see :meth:`set_epoch`). Default False.
        drop_last (bool): drop the last partial batch. Default False.
        seed (int): seed of the shuffling and of the sampler's random draws. Default 0.
        rank (int): this process's rank; batches ``rank, rank + world_size, ...`` are its own.
        world_size (int): number of ranks. Every rank gets the same number of batches (up to
            ``world_size - 1`` trailing batches are left out), so collectives never hang.
    """

    def __init__(
        self,
        examples: Interactions,
        sampler: NeighborSampler,
        user_type: NodeType,
        item_type: NodeType,
        batch_size: int,
        node_types: Sequence[NodeType],
        sparse_names: Sequence[str],
        node_features: Optional[Dict[NodeType, torch.Tensor]] = None,
        shuffle: bool = False,
        drop_last: bool = False,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if batch_size <= 0:
            raise ValueError(f"GraphBatchDataset: batch_size must be positive, got {batch_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"GraphBatchDataset: rank {rank} outside world_size {world_size}")
        missing = [name for name in sparse_names if name not in examples.sparse]
        if missing:
            raise ValueError(
                f"GraphBatchDataset: sparse features {missing} are not in the examples "
                f"(have {sorted(examples.sparse)})"
            )
        graph_types = list(sampler.graph.node_types)
        if sorted(node_types) != sorted(graph_types) or len(set(node_types)) != len(node_types):
            raise ValueError(
                f"GraphBatchDataset: node_types {list(node_types)} must list every node type of the graph "
                f"once, in the order of the node tables; the graph has {graph_types}"
            )
        for t in (user_type, item_type):
            if t not in node_types:
                raise ValueError(f"GraphBatchDataset: node type {t!r} is not in node_types {list(node_types)}")
        self.examples = examples
        self.sampler = sampler
        self.user_type, self.item_type = user_type, item_type
        self.batch_size = batch_size
        self.node_types = list(node_types)
        self.sparse_names = list(sparse_names)
        self.node_features = dict(node_features or {})
        self.shuffle, self.drop_last, self.seed = shuffle, drop_last, seed
        self.rank, self.world_size = rank, world_size
        self.epoch = 0
        self._order: Optional[torch.Tensor] = None
        total = len(examples) // batch_size if drop_last else -(-len(examples) // batch_size)
        self.num_batches = total // world_size
        if self.num_batches == 0:
            raise ValueError(
                f"GraphBatchDataset: {len(examples)} examples make {total} batches of {batch_size}, "
                f"fewer than world_size={world_size} ranks; lower batch_size or add data"
            )

    def set_epoch(self, epoch: int) -> None:
        """Select the shuffle of ``epoch`` (call before iterating, as with DistributedSampler)."""
        self.epoch = epoch
        self._order = None

    def __len__(self) -> int:
        return self.num_batches

    def _example_order(self) -> torch.Tensor:
        if self._order is None:
            n = len(self.examples)
            self._order = (
                torch.randperm(n, generator=_generator(self.seed, self.epoch)) if self.shuffle else torch.arange(n)
            )
        return self._order

    def __getitem__(self, index: int) -> GraphBatch:
        if not 0 <= index < self.num_batches:
            raise IndexError(f"GraphBatchDataset: batch {index} outside [0, {self.num_batches})")
        global_index = index * self.world_size + self.rank
        rows = self._example_order()[global_index * self.batch_size : (global_index + 1) * self.batch_size]
        return self.build_batch(self.examples.subset(rows), _generator(self.seed, self.epoch, global_index, 1))

    def build_batch(self, ex: Interactions, generator: torch.Generator) -> GraphBatch:
        """Sample the subgraph of the examples ``ex`` and assemble their :class:`GraphBatch`."""
        b = len(ex)
        same_type = self.user_type == self.item_type
        if same_type:
            seeds = {self.user_type: torch.cat([ex.user, ex.item])}
        else:
            seeds = {self.user_type: ex.user, self.item_type: ex.item}
        seed_time = None
        if self.sampler.temporal:
            # One subgraph serves the whole batch and a GNN mixes it across examples, so every
            # seed gets the batch's earliest time: no example can see an edge from its future
            # through another example's seed. Time-ordered batches (shuffle=False) lose least.
            earliest = ex.timestamp.min()
            seed_time = {t: torch.full_like(s, int(earliest)) for t, s in seeds.items()}
        with record_function("## sample ##"):
            out = self.sampler.sample(seeds, seed_time=seed_time, generator=generator)
        if same_type:
            user_index, item_index = out.seed_index[self.user_type][:b], out.seed_index[self.user_type][b:]
        else:
            user_index, item_index = out.seed_index[self.user_type], out.seed_index[self.item_type]

        empty = torch.empty(0, dtype=torch.int64)
        nodes = [out.node.get(t, empty) for t in self.node_types]
        node_ids = KeyedJaggedTensor(
            keys=self.node_types,
            values=torch.cat(nodes),
            lengths=torch.tensor([n.numel() for n in nodes], dtype=torch.int32),
            stride=1,
        )
        sparse_features = KeyedJaggedTensor(
            keys=self.sparse_names,
            values=torch.cat([ex.sparse[k] for k in self.sparse_names]) if self.sparse_names else empty,
            lengths=torch.ones(len(self.sparse_names) * b, dtype=torch.int32),
            stride=b,
        )
        missing = torch.isnan(ex.labels)
        hops = len(next(iter(out.num_sampled_nodes.values()), []))
        return GraphBatch(
            dense_features=ex.dense,
            sparse_features=sparse_features,
            labels=ex.labels.masked_fill(missing, 0.0),
            label_mask=~missing,
            node_ids=node_ids,
            edge_index=out.edge_index_dict,
            user_index=user_index,
            item_index=item_index,
            num_sampled_nodes={t: list(out.num_sampled_nodes.get(t, [0] * hops)) for t in self.node_types},
            num_sampled_edges={et: list(c) for et, c in out.num_sampled_edges.items()},
            node_features={t: x[out.node.get(t, empty)] for t, x in self.node_features.items()},
        )


def pad_for_ranks(examples: Interactions, batch_size: int, world_size: int) -> Interactions:
    """Pad ``examples`` to whole batches on every rank, for evaluation that covers every row.

    Padding rows repeat the first examples with every label missing (NaN), so metrics, which
    skip missing labels, are exactly those of ``examples``.

    Args:
        examples (Interactions): N examples.
        batch_size (int): B per rank.
        world_size (int): ranks.

    Returns:
        Interactions: ceil(N / (B * world_size)) * B * world_size rows, the first N unchanged.
    """
    per_round = batch_size * world_size
    padded = -(-len(examples) // per_round) * per_round
    if padded == len(examples):
        return examples
    filler = examples.subset(torch.arange(padded - len(examples)) % len(examples))
    filler.labels = torch.full_like(filler.labels, float("nan"))
    return Interactions.concat([examples, filler])


def _worker_init(_: int) -> None:
    # Each worker samples single-threaded: the workers are the parallelism.
    torch.set_num_threads(1)
    info = get_worker_info()
    if info is not None:
        info.dataset.sampler.num_threads = 1


def make_dataloader(
    dataset: GraphBatchDataset,
    num_workers: int = 2,
    pin_memory: bool = False,
    prefetch_factor: int = 4,
    start: int = 0,
) -> DataLoader:
    """A DataLoader that yields the dataset's GraphBatches (``batch_size=None``).

    Args:
        dataset (GraphBatchDataset): the batches.
        num_workers (int): worker processes building batches (0 = in the main process).
        pin_memory (bool): pin batches for fast host-to-GPU copies (use on CUDA).
        prefetch_factor (int): batches each worker keeps ready.
        start (int): first batch of the epoch to yield (resuming mid-epoch). Default 0.
    """
    kwargs: Dict[str, object] = {}
    if num_workers > 0:
        kwargs = {"prefetch_factor": prefetch_factor, "worker_init_fn": _worker_init, "persistent_workers": False}
    # Batches draw from their own (seed, epoch, batch) generators; this one only keeps the
    # DataLoader from consuming the global RNG that dropout and GFAE masking use.
    return DataLoader(
        dataset, batch_size=None, sampler=range(start, len(dataset)), num_workers=num_workers,
        pin_memory=pin_memory, generator=torch.Generator().manual_seed(dataset.seed), **kwargs,
    )

