"""MovieLens-100K as a :class:`~torchrec_gnn.data.dataset.GraphRecDataset`, from either layout.

Layouts (auto-detected from the files in the folder):

* **RecBole atomic** (``<name>.inter``, ``<name>.user``, ``<name>.item``, optionally ``<name>.kg``
  with ``<name>.link``; each may be gzipped): tab-separated, header ``field:type``.
* **GroupLens original** (``u.data``, ``u.user``, ``u.item``): ``u.data`` tab-separated
  ``user item rating timestamp``; ``u.user`` ``user|age|gender|occupation|zip``; ``u.item``
  latin-1 ``id|title|release date|video date|url|19 genre flags``. No knowledge graph.

Both layouts of the same data give the same dataset.

Examples are the observed ratings, with tasks ``like`` (binary, ``rating >= 4``) and ``rating``
(regression, 1..5). With ``negatives_per_positive = k > 0``, each rating also gets ``k`` sampled
items the user never rated (same timestamp), and a third task ``watch`` is added: 1 for rated
pairs, 0 for sampled ones, whose ``like``/``rating`` are ``NaN`` (missing).

Graph (node types ``user``, ``item``, ``genre``, and ``entity`` with a KG):

* ``("user", "rates", "item")``: timed (rating time), weight = rating; observed ratings only;
* ``("item", "has_genre", "genre")``: static;
* ``("item", "links", "entity")``: static, item -> its Freebase entity (``.link``);
* ``("entity", <relation>, "entity")``: static, one relation per KG relation id, with ``.``
  replaced by ``_`` (``film.film.genre`` -> ``film_film_genre``; never ``__``, PyG's separator).

Node ids are the sorted raw ids (numbers sort numerically). Ranker features, per example:

* sparse: ``user_id``, ``item_id`` (node ids), ``age_bucket`` (<18, 18-24, 25-34, 35-44,
  45-49, 50-55, 56+), ``gender``, ``occupation``, ``zip_prefix`` (first 3 characters),
  ``release_decade``, ``first_genre``; ``0`` = missing for all but the ids;
* dense: ``num_genres``, ``release_year``, ``user_age``, each standardized over its node table.

Node features: ``user`` = [age (standardized), gender one-hot, occupation one-hot];
``item`` = [release year (standardized), genre multi-hot] (float32, missing -> 0).

Example:
    >>> from torchrec_gnn.data.paths import default_data_dir
    >>> ds = load_movielens(default_data_dir() / "ml-100k-recbole")   # doctest: +SKIP
    >>> ds.num_nodes["user"], ds.num_nodes["item"], len(ds.examples)   # doctest: +SKIP
    (943, 1682, 100000)
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import pandas as pd
import torch

from torchrec_gnn.data.dataset import GraphRecDataset, Interactions, TaskSpec
from torchrec_gnn.data.tabular import encode_categorical, id_index, lookup_ids
from torchrec_gnn.tables import require_columns
from torchrec_gnn.typing import EdgeList, EdgeType

LIKE_THRESHOLD = 4.0
AGE_BUCKET_EDGES = (18, 25, 35, 45, 50, 56)  # MovieLens-1M buckets
ZIP_PREFIX_LEN = 3
GROUPLENS_FILES = ("u.data", "u.user", "u.item")
RECBOLE_SUFFIXES = (".inter", ".user", ".item")
# u.item genre flag order (u.genre of ml-100k)
GROUPLENS_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
    "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
)  # fmt: skip


@dataclass
class _Tables:
    """Layout-independent raw tables (raw ids, not yet numbered)."""

    ratings: pd.DataFrame  # user, item, rating (float), timestamp (int64)
    users: pd.DataFrame  # user, age (float, NaN = missing), gender, occupation, zip (str)
    items: pd.DataFrame  # item, year (float, NaN = missing), genres (list of str, listed order)
    kg: Optional[pd.DataFrame]  # head, relation, tail
    link: Optional[pd.DataFrame]  # item, entity


def load_movielens(path: str | Path, negatives_per_positive: int = 0, seed: int = 0) -> GraphRecDataset:
    """Load MovieLens-100K from a RecBole-atomic or GroupLens folder (see the module docstring).

    Args:
        path (str | Path): folder with ``<name>.inter[.gz]``/``.user``/``.item`` (RecBole) or
            ``u.data``/``u.user``/``u.item`` (GroupLens).
        negatives_per_positive (int): sampled unrated items per rating (0 = ratings only, 2 tasks;
            otherwise a ``watch`` task is added). Default: 0.
        seed (int): seed of the negative sampler. Default: 0.

    Returns:
        GraphRecDataset: validated dataset named ``"movielens"``; rated examples first, in file
        order, then the sampled negatives.
    """
    if negatives_per_positive < 0:
        raise ValueError(f"load_movielens: negatives_per_positive must be >= 0, got {negatives_per_positive}")
    root = Path(path)
    name = _recbole_name(root)
    if name is not None:
        tables = _read_recbole(root, name)
    elif all((root / f).is_file() for f in GROUPLENS_FILES):
        tables = _read_grouplens(root)
    else:
        raise FileNotFoundError(
            f"{root}: not a MovieLens folder; expected RecBole files <name>.inter, <name>.user, <name>.item "
            f"(optionally .gz, plus <name>.kg and <name>.link) or GroupLens files {', '.join(GROUPLENS_FILES)}; "
            f"found {sorted(p.name for p in root.iterdir()) if root.is_dir() else 'no such folder'}"
        )
    return _build(tables, negatives_per_positive, seed)


# ----------------------------------------------------------------------------------------------
# Readers: each returns _Tables with the same columns.


def _recbole_name(root: Path) -> Optional[str]:
    """Dataset name ``<name>`` of the single ``<name>.inter[.gz]`` in ``root``, or ``None``."""
    names = sorted({p.name.split(".inter")[0] for p in root.glob("*.inter*") if re.search(r"\.inter(\.gz)?$", p.name)})
    if len(names) > 1:
        raise ValueError(f"{root}: several RecBole .inter files {names}; keep one dataset per folder")
    return names[0] if names else None


def _recbole_file(root: Path, name: str, suffix: str, required: bool) -> Optional[Path]:
    for candidate in (root / f"{name}{suffix}", root / f"{name}{suffix}.gz"):
        if candidate.is_file():
            return candidate
    if required:
        raise FileNotFoundError(f"{root}: RecBole layout needs {name}{suffix} (or {name}{suffix}.gz)")
    return None


def _read_atomic(path: Path, columns: List[str]) -> pd.DataFrame:
    """Read a RecBole atomic file as strings, header ``field:type`` -> ``field``; keep ``columns``."""
    frame = pd.read_csv(path, sep="\t", dtype=str, quoting=csv.QUOTE_NONE, keep_default_na=False, na_values=[""])
    frame.columns = [c.split(":")[0] for c in frame.columns]
    require_columns(path.name, frame, columns)
    return frame[columns]


def _read_recbole(root: Path, name: str) -> _Tables:
    inter_path, user_path, item_path = (_recbole_file(root, name, s, required=True) for s in RECBOLE_SUFFIXES)
    kg_path = _recbole_file(root, name, ".kg", required=False)
    link_path = _recbole_file(root, name, ".link", required=False)
    if (kg_path is None) != (link_path is None):
        raise FileNotFoundError(f"{root}: {name}.kg and {name}.link come together; found only one of them")
    inter = _read_atomic(inter_path, ["user_id", "item_id", "rating", "timestamp"])
    users = _read_atomic(user_path, ["user_id", "age", "gender", "occupation", "zip_code"])
    items = _read_atomic(item_path, ["item_id", "release_year", "class"])
    kg = link = None
    if kg_path is not None and link_path is not None:
        kg = _read_atomic(kg_path, ["head_id", "relation_id", "tail_id"]).set_axis(["head", "relation", "tail"], axis=1)
        raw_link = _read_atomic(link_path, ["item_id", "entity_id"])
        link = pd.DataFrame({"item": _ids(raw_link["item_id"]), "entity": raw_link["entity_id"]})
    return _Tables(
        ratings=pd.DataFrame(
            {
                "user": _ids(inter["user_id"]),
                "item": _ids(inter["item_id"]),
                "rating": _number(inter["rating"], f"{inter_path.name}: column 'rating'"),
                "timestamp": _number(inter["timestamp"], f"{inter_path.name}: column 'timestamp'").astype(np.int64),
            }
        ),
        users=pd.DataFrame(
            {
                "user": _ids(users["user_id"]),
                "age": pd.to_numeric(users["age"], errors="coerce"),
                "gender": users["gender"],
                "occupation": users["occupation"],
                "zip": users["zip_code"],
            }
        ),
        items=pd.DataFrame(
            {
                "item": _ids(items["item_id"]),
                "year": pd.to_numeric(items["release_year"], errors="coerce"),
                "genres": items["class"].fillna("").str.split(),
            }
        ),
        kg=kg,
        link=link,
    )


def _read_grouplens(root: Path) -> _Tables:
    data = pd.read_csv(root / "u.data", sep="\t", header=None, names=["user", "item", "rating", "timestamp"])
    users = pd.read_csv(
        root / "u.user", sep="|", header=None, names=["user", "age", "gender", "occupation", "zip"], dtype={"zip": str}
    )
    flags = list(GROUPLENS_GENRES)
    items = pd.read_csv(
        root / "u.item",
        sep="|",
        header=None,
        encoding="latin-1",
        quoting=csv.QUOTE_NONE,
        names=["item", "title", "release", "video_release", "url", *flags],
    )
    if items[flags].isna().any().any():
        raise ValueError(f"u.item: expected 24 '|'-separated fields per row (5 + {len(flags)} genre flags)")
    genre_names = np.array(flags, dtype=object)
    return _Tables(
        ratings=data.assign(
            rating=_number(data["rating"], "u.data: column 3 (rating)"),
            timestamp=_number(data["timestamp"], "u.data: column 4 (timestamp)").astype(np.int64),
        ),
        users=users,
        items=pd.DataFrame(
            {
                "item": items["item"],
                # release date is dd-Mon-yyyy
                "year": pd.to_numeric(items["release"].astype(str).str[-4:], errors="coerce"),
                "genres": [list(genre_names[row.astype(bool)]) for row in items[flags].to_numpy()],
            }
        ),
        kg=None,
        link=None,
    )


def _ids(values: pd.Series) -> pd.Series:
    """RecBole token ids as ints when every token is an integer, else as strings."""
    numeric = pd.to_numeric(values, errors="coerce")
    integral = numeric.notna().all() and bool((numeric == numeric.round()).all())
    return numeric.astype(np.int64) if integral else values


def _number(values: pd.Series, where: str) -> pd.Series:
    out = pd.to_numeric(values, errors="coerce")
    bad = out.isna().to_numpy()
    if bad.any():
        row = int(np.argmax(bad))
        raise ValueError(f"{where}: expected a number, found {values.iloc[row]!r} at row {row}")
    return out


# ----------------------------------------------------------------------------------------------
# Layout-independent build.


def _build(t: _Tables, negatives_per_positive: int, seed: int) -> GraphRecDataset:
    user_index = id_index([t.ratings["user"], t.users["user"]])
    item_index = id_index([t.ratings["item"], t.items["item"], *([t.link["item"]] if t.link is not None else [])])
    n_user, n_item = len(user_index), len(item_index)

    # Per-node tables, row i = node i (nodes absent from the side tables get NaN).
    users = t.users.set_axis(lookup_ids(user_index, t.users["user"])).reindex(np.arange(n_user))
    items = t.items.set_axis(lookup_ids(item_index, t.items["item"])).reindex(np.arange(n_item))
    genres = items["genres"].apply(lambda g: g if isinstance(g, list) else [])
    genre_names = sorted({g for gs in genres for g in gs})
    genre_of = {g: i for i, g in enumerate(genre_names)}

    pos_user = lookup_ids(user_index, t.ratings["user"])
    pos_item = lookup_ids(item_index, t.ratings["item"])
    rating = t.ratings["rating"].to_numpy(np.float64)
    time = t.ratings["timestamp"].to_numpy(np.int64)
    tasks = [TaskSpec("like", "binary"), TaskSpec("rating", "regression")]
    labels = np.stack([(rating >= LIKE_THRESHOLD).astype(np.float64), rating], axis=1)  # (N, 2)
    ex_user, ex_item, ex_time = pos_user, pos_item, time
    if negatives_per_positive > 0:
        neg_user, neg_item = _sample_negatives(pos_user, pos_item, n_item, negatives_per_positive, seed)
        n_pos, n_neg = len(pos_user), len(neg_user)
        tasks.append(TaskSpec("watch", "binary"))
        labels = np.concatenate(
            [
                np.concatenate([labels, np.ones((n_pos, 1))], axis=1),
                np.concatenate([np.full((n_neg, 2), np.nan), np.zeros((n_neg, 1))], axis=1),
            ]
        )  # (N_pos + N_neg, 3)
        ex_user = np.concatenate([pos_user, neg_user])
        ex_item = np.concatenate([pos_item, neg_item])
        ex_time = np.concatenate([time, np.repeat(time, negatives_per_positive)])

    # Per-node categorical ids (0 = missing) and standardized numbers, gathered per example below.
    age = users["age"].to_numpy(np.float64)
    year = items["year"].to_numpy(np.float64)
    age_bucket = np.where(np.isnan(age), 0, np.searchsorted(AGE_BUCKET_EDGES, age, side="right") + 1)
    first_genre = np.array([genre_of[g[0]] + 1 if g else 0 for g in genres], np.int64)
    node_sparse = {  # name -> (per-node ids, cardinality, node type)
        "age_bucket": (age_bucket, len(AGE_BUCKET_EDGES) + 2, "user"),
        "gender": (*encode_categorical(users["gender"]), "user"),
        "occupation": (*encode_categorical(users["occupation"]), "user"),
        "zip_prefix": (*encode_categorical(users["zip"].str[:ZIP_PREFIX_LEN]), "user"),
        "release_decade": (*encode_categorical(pd.Series(year // 10 * 10)), "item"),
        "first_genre": (first_genre, len(genre_names) + 1, "item"),
    }
    node_dense = {
        "num_genres": (_standardize(genres.apply(len).to_numpy(np.float64)), "item"),
        "release_year": (_standardize(year), "item"),
        "user_age": (_standardize(age), "user"),
    }
    rows = {"user": ex_user, "item": ex_item}
    sparse = {"user_id": torch.from_numpy(ex_user.copy()), "item_id": torch.from_numpy(ex_item.copy())}
    cardinality = {"user_id": n_user, "item_id": n_item}
    for name, (codes, card, node_type) in node_sparse.items():
        sparse[name] = torch.from_numpy(np.asarray(codes, np.int64)[rows[node_type]])
        cardinality[name] = int(card)
    dense = np.stack([values[rows[node_type]] for values, node_type in node_dense.values()], axis=1)  # (N, 3)

    genre_hot = np.zeros((n_item, len(genre_names)), np.float32)
    for i, gs in enumerate(genres):
        genre_hot[i, [genre_of[g] for g in gs]] = 1.0
    node_features = {
        "user": torch.from_numpy(
            np.concatenate(
                [node_dense["user_age"][0][:, None], _one_hot(users["gender"]), _one_hot(users["occupation"])], axis=1
            ).astype(np.float32)
        ),  # (n_user, 1 + genders + occupations)
        "item": torch.from_numpy(
            np.concatenate([node_dense["release_year"][0][:, None], genre_hot], axis=1).astype(np.float32)
        ),  # (n_item, 1 + genres)
    }

    num_nodes = {"user": n_user, "item": n_item, "genre": len(genre_names)}
    item_of_genre = [(i, genre_of[g]) for i, gs in enumerate(genres) for g in gs]
    edges: Dict[EdgeType, EdgeList] = {
        ("user", "rates", "item"): EdgeList(
            src=torch.from_numpy(pos_user),
            dst=torch.from_numpy(pos_item),
            time=torch.from_numpy(time),
            weight=torch.from_numpy(rating.astype(np.float32)),
        ),
        ("item", "has_genre", "genre"): EdgeList(*_pairs(item_of_genre)),
    }
    if t.kg is not None and t.link is not None:
        entity_index = id_index([t.kg["head"], t.kg["tail"], t.link["entity"]])
        num_nodes["entity"] = len(entity_index)
        edges[("item", "links", "entity")] = EdgeList(
            src=torch.from_numpy(lookup_ids(item_index, t.link["item"])),
            dst=torch.from_numpy(lookup_ids(entity_index, t.link["entity"])),
        )
        head = lookup_ids(entity_index, t.kg["head"])
        tail = lookup_ids(entity_index, t.kg["tail"])
        relation = t.kg["relation"].to_numpy()
        names = {rel: relation_name(rel) for rel in sorted(set(relation))}
        if len(set(names.values())) != len(names):
            raise ValueError(f"kg: relation ids {sorted(names)} give clashing relation names {sorted(names.values())}")
        for rel, name in names.items():
            mask = relation == rel
            edges[("entity", name, "entity")] = EdgeList(
                src=torch.from_numpy(head[mask]), dst=torch.from_numpy(tail[mask])
            )

    ds = GraphRecDataset(
        name="movielens",
        tasks=tasks,
        user_type="user",
        item_type="item",
        num_nodes=num_nodes,
        examples=Interactions.from_arrays(
            user=ex_user,
            item=ex_item,
            timestamp=ex_time,
            labels=labels,
            dense=dense,
            sparse=sparse,
        ),
        edges=edges,
        dense_names=list(node_dense),
        sparse_cardinality=cardinality,
        node_features=node_features,
    )
    ds.validate()
    return ds


def relation_name(relation: str) -> str:
    """KG relation id as a relation name: ``film.film.genre`` -> ``film_film_genre``.

    Never contains ``__``: PyG and :func:`~torchrec_gnn.typing.edge_type_str` join
    ``(src, rel, dst)`` with ``__``, so a relation holding it could not be split back.
    """
    return re.sub(r"_+", "_", re.sub(r"\W", "_", relation)).strip("_")


def _sample_negatives(
    user: np.ndarray, item: np.ndarray, n_item: int, k: int, seed: int
) -> Tuple[np.ndarray, np.ndarray]:
    """``k`` uniformly drawn items per (user, item) rating that ``user`` never rated: (N * k,) each."""
    rated = np.unique(user * n_item + item)
    full = np.bincount(rated // n_item) >= n_item
    if full.any():
        raise ValueError(
            f"load_movielens: user node {int(np.argmax(full))} rated all {n_item} items; no negatives to sample"
        )
    rng = np.random.default_rng(seed)
    neg_user = np.repeat(user, k)
    neg_item = rng.integers(0, n_item, size=neg_user.size)
    clash = np.isin(neg_user * n_item + neg_item, rated)
    while clash.any():  # rejection sampling: redraw the rated ones
        neg_item[clash] = rng.integers(0, n_item, size=int(clash.sum()))
        clash[clash] = np.isin(neg_user[clash] * n_item + neg_item[clash], rated)
    return neg_user, neg_item.astype(np.int64)


def _standardize(x: np.ndarray) -> np.ndarray:
    """(n,) zero-mean unit-variance over the known values; missing (NaN) -> 0."""
    known = x[~np.isnan(x)]
    if known.size == 0:
        return np.zeros_like(x)
    std = known.std()
    out = (x - known.mean()) / (std if std > 0 else 1.0)
    return np.nan_to_num(out, nan=0.0)


def _one_hot(values: pd.Series) -> np.ndarray:
    """(n, K) one-hot over the sorted distinct values; missing -> all zeros."""
    codes, card = encode_categorical(values)
    return np.eye(card, dtype=np.float32)[codes][:, 1:]


def _pairs(pairs: List[Tuple[int, int]]) -> Tuple[torch.Tensor, torch.Tensor]:
    arr = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    return torch.from_numpy(arr[:, 0].copy()), torch.from_numpy(arr[:, 1].copy())
