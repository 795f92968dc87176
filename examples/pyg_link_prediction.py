"""Link prediction on MovieLens-100K with a stock PyG GraphSAGE, where only the loader import changes.

This is PyG's MovieLens link-prediction tutorial (heterogeneous GraphSAGE via ``to_hetero``,
``RandomLinkSplit``, ``LinkNeighborLoader`` with binary negative sampling, a dot-product
classifier), run on the RecBole copy of MovieLens-100K in ``../shared/data``. The single
project-specific line is the import of ``LinkNeighborLoader``; PyG's own loader needs pyg-lib or
torch-sparse, which do not install from the package registry for current torch.

    python examples/pyg_link_prediction.py --data ../shared/data/ml-100k-recbole --epochs 3
    python examples/pyg_link_prediction.py --loader pyg   # PyG's loader, where torch-sparse is installed
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Dict, Optional, Sequence

import pandas as pd
import torch
import torch.nn.functional as F
import torch_geometric.transforms as T
from sklearn.metrics import roc_auc_score
from torch import Tensor
from torch_geometric.data import HeteroData
from torch_geometric.nn import SAGEConv, to_hetero
from tqdm import tqdm

from torchrec_gnn.pyg import LinkNeighborLoader  # was: from torch_geometric.loader import LinkNeighborLoader

RATES = ("user", "rates", "movie")
GENRES = ["Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama", "Fantasy",
          "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western"]


def load_movielens(root: Path) -> HeteroData:
    """Users rate movies (every rating is a link); movies carry multi-hot genres."""
    ratings = pd.read_csv(root / "ml-100k.inter.gz", sep="\t")
    movies = pd.read_csv(root / "ml-100k.item.gz", sep="\t")
    user_ids = {u: i for i, u in enumerate(sorted(ratings["user_id:token"].unique()))}
    movie_ids = {m: i for i, m in enumerate(sorted(movies["item_id:token"].unique()))}
    genres = torch.zeros(len(movie_ids), len(GENRES))
    for item, classes in zip(movies["item_id:token"], movies["class:token_seq"].fillna("")):
        for genre in classes.split():
            if genre in GENRES:
                genres[movie_ids[item], GENRES.index(genre)] = 1.0
    data = HeteroData()
    data["user"].node_id = torch.arange(len(user_ids))
    data["movie"].node_id = torch.arange(len(movie_ids))
    data["movie"].x = genres
    data[RATES].edge_index = torch.tensor([[user_ids[u] for u in ratings["user_id:token"]],
                                           [movie_ids[m] for m in ratings["item_id:token"]]])
    return T.ToUndirected()(data)  # adds ("movie", "rev_rates", "user")


class GNN(torch.nn.Module):
    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.conv1 = SAGEConv(hidden, hidden)
        self.conv2 = SAGEConv(hidden, hidden)

    def forward(self, x: Tensor, edge_index: Tensor) -> Tensor:
        return self.conv2(F.relu(self.conv1(x, edge_index)), edge_index)


class Model(torch.nn.Module):
    """User and movie embeddings (movies add a projection of their genres), a heterogeneous
    GraphSAGE, and a dot product per (user, movie) link."""

    def __init__(self, data: HeteroData, hidden: int) -> None:
        super().__init__()
        self.movie_lin = torch.nn.Linear(len(GENRES), hidden)
        self.user_emb = torch.nn.Embedding(data["user"].num_nodes, hidden)
        self.movie_emb = torch.nn.Embedding(data["movie"].num_nodes, hidden)
        self.gnn = to_hetero(GNN(hidden), metadata=data.metadata())

    def forward(self, batch: HeteroData) -> Tensor:
        x = {"user": self.user_emb(batch["user"].node_id),
             "movie": self.movie_lin(batch["movie"].x) + self.movie_emb(batch["movie"].node_id)}
        h = self.gnn(x, batch.edge_index_dict)
        index = batch[RATES].edge_label_index
        return (h["user"][index[0]] * h["movie"][index[1]]).sum(dim=-1)


def auc(model: Model, loader, limit_batches: Optional[int] = None) -> float:
    model.eval()
    scores, labels = [], []
    with torch.no_grad():
        for step, batch in enumerate(loader):
            if limit_batches is not None and step >= limit_batches:
                break
            scores.append(model(batch))
            labels.append(batch[RATES].edge_label)
    return float(roc_auc_score(torch.cat(labels).numpy(), torch.cat(scores).numpy()))


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, float]:
    """Train and score; returns the last epoch's validation AUC and the test AUC."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "ml-100k-recbole")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--loader", choices=["torchrec_gnn", "pyg"], default="torchrec_gnn",
                        help="whose LinkNeighborLoader samples (pyg needs pyg-lib or torch-sparse)")
    parser.add_argument("--limit-batches", type=int, default=None,
                        help="train and score on at most this many batches per epoch and split (a smoke test)")
    args = parser.parse_args(argv)
    if not (args.data / "ml-100k.inter.gz").is_file():
        parser.error(f"--data {args.data}: ml-100k.inter.gz not found there")
    loader_class = LinkNeighborLoader
    if args.loader == "pyg":
        from torch_geometric.loader import LinkNeighborLoader as loader_class  # noqa: N813

    torch.manual_seed(args.seed)
    data = load_movielens(args.data)
    split = T.RandomLinkSplit(num_val=0.1, num_test=0.1, disjoint_train_ratio=0.3, neg_sampling_ratio=2.0,
                              add_negative_train_samples=False, edge_types=RATES, rev_edge_types=("movie", "rev_rates", "user"))
    train_data, val_data, test_data = split(data)
    train_loader = loader_class(train_data, num_neighbors=[20, 10], neg_sampling_ratio=2.0,
                                edge_label_index=(RATES, train_data[RATES].edge_label_index),
                                edge_label=train_data[RATES].edge_label, batch_size=args.batch_size, shuffle=True)
    eval_loaders = {name: loader_class(part, num_neighbors=[20, 10], edge_label_index=(RATES, part[RATES].edge_label_index),
                                       edge_label=part[RATES].edge_label, batch_size=3 * args.batch_size)
                    for name, part in (("val", val_data), ("test", test_data))}
    model = Model(data, args.hidden)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.001)
    print(f"MovieLens-100K: {data}\nloader: {loader_class.__module__}.{loader_class.__name__}")
    for epoch in range(1, args.epochs + 1):
        model.train()
        total, count, start = 0.0, 0, time.perf_counter()
        for step, batch in enumerate(tqdm(train_loader, desc=f"epoch {epoch}", leave=False)):
            if args.limit_batches is not None and step >= args.limit_batches:
                break
            optimizer.zero_grad()
            loss = F.binary_cross_entropy_with_logits(model(batch), batch[RATES].edge_label)
            loss.backward()
            optimizer.step()
            total, count = total + loss.item() * batch[RATES].edge_label.numel(), count + batch[RATES].edge_label.numel()
        val_auc = auc(model, eval_loaders["val"], args.limit_batches)
        print(f"epoch {epoch}: loss {total / count:.4f}, val AUC {val_auc:.4f} ({time.perf_counter() - start:.1f} s)")
    test_auc = auc(model, eval_loaders["test"], args.limit_batches)
    print(f"test AUC {test_auc:.4f}")
    return {"val_auc": val_auc, "test_auc": test_auc}


if __name__ == "__main__":
    main()
