"""Shared fixtures: a tiny heterogeneous log dataset, its leak-free split and GraphBatches."""

import logging
import multiprocessing
from typing import List

import pytest
import torch

from torchrec_gnn.data.batch import GraphBatch
from torchrec_gnn.data.dataset import GraphRecDataset, Interactions, TaskSpec
from torchrec_gnn.data.loader import BatchPlan, BatchSchema, GraphBatchBuilder, GraphBatchDataset, LinkTargets
from torchrec_gnn.data.split import TimeSplit, time_split
from torchrec_gnn.graph.sampler import NeighborSampler
from torchrec_gnn.typing import EdgeList

NUM_USERS, NUM_ITEMS, NUM_GENRES = 40, 60, 5

# The 2-rank tests (TorchRec's MultiProcessTestBase) start their ranks from the forkserver: with
# the stack imported there once, each rank is a fork instead of a fresh interpreter importing
# torch, TorchRec and PyG again (about 4 s a rank on this machine's 2 cores).
multiprocessing.set_forkserver_preload(["torch", "torchrec", "torch_geometric", "torchrec_gnn.recipes.ranker"])


def tiny_log_dataset(n: int = 1200, seed: int = 0) -> GraphRecDataset:
    """Users watch items, items belong to genres; two tasks (click, stay) with one missing label."""
    g = torch.Generator().manual_seed(seed)
    user = torch.randint(0, NUM_USERS, (n,), generator=g)
    item = torch.randint(0, NUM_ITEMS, (n,), generator=g)
    time = torch.randint(0, 10_000, (n,), generator=g)
    genre_of_item = torch.arange(NUM_ITEMS) % NUM_GENRES
    taste = torch.randint(0, NUM_GENRES, (NUM_USERS,), generator=g)
    click = (genre_of_item[item] == taste[user]).float()
    stay = click * torch.rand(n, generator=g) * 30
    stay[::50] = float("nan")
    examples = Interactions(
        user=user, item=item, timestamp=time,
        labels=torch.stack([click, stay], dim=1),
        dense=torch.randn(n, 3, generator=g),
        sparse={"user_id": user, "item_id": item, "genre": genre_of_item[item]},
    )
    edges = {
        ("user", "watches", "item"): EdgeList(src=user, dst=item, time=time),
        ("item", "in", "genre"): EdgeList(src=torch.arange(NUM_ITEMS), dst=genre_of_item),
    }
    return GraphRecDataset(
        name="tiny_log", tasks=[TaskSpec("click", "binary"), TaskSpec("stay", "regression")],
        user_type="user", item_type="item",
        num_nodes={"user": NUM_USERS, "item": NUM_ITEMS, "genre": NUM_GENRES},
        examples=examples, edges=edges, dense_names=["d0", "d1", "d2"],
        sparse_cardinality={"user_id": NUM_USERS, "item_id": NUM_ITEMS, "genre": NUM_GENRES},
    )


@pytest.fixture(autouse=True)
def _package_logger_reset() -> None:
    """Each test starts with the package's logger as Python makes it (no handler, propagating to
    the root, no level): a CLI entry point run earlier, by a test or a module-scoped fixture,
    gives it its own handler and turns propagation off, which would hide the records from a
    later test's ``caplog``."""
    logger = logging.getLogger("torchrec_gnn")
    logger.handlers.clear()
    logger.propagate = True
    logger.setLevel(logging.NOTSET)


@pytest.fixture(scope="session")
def tiny_split() -> TimeSplit:
    return time_split(tiny_log_dataset(), history_fraction=0.5, val_fraction=0.1, test_fraction=0.1)


def make_batches(
    split: TimeSplit, batch_size: int = 64, fanouts: List[int] = (5, 3), seed: int = 0, links_per_batch: int = 0
) -> List[GraphBatch]:
    sampler = NeighborSampler(split.graph, list(fanouts))
    links = LinkTargets.from_graph(split.graph, "user", "item", None, links_per_batch) if links_per_batch else None
    dataset = GraphBatchDataset(
        split.train,
        GraphBatchBuilder(
            sampler,
            BatchSchema("user", "item", split.graph.node_types, ["user_id", "item_id", "genre"]),
            links=links,
        ),
        BatchPlan(batch_size, shuffle=True, seed=seed),
    )
    return [dataset[i] for i in range(len(dataset))]


@pytest.fixture(scope="session")
def tiny_batches(tiny_split: TimeSplit) -> List[GraphBatch]:
    return make_batches(tiny_split)


@pytest.fixture(scope="session")
def tiny_link_batches(tiny_split: TimeSplit) -> List[GraphBatch]:
    """The same batches, each also holding out 16 history watches (and 16 negatives) to predict."""
    return make_batches(tiny_split, links_per_batch=16)
