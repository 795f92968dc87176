"""Bring your own data: a folder of tables described by ``dataset.yaml``.

Folder layout (each table is ``.csv`` or ``.parquet``; having both for one table is an error)::

    my_shop/
      dataset.yaml                    # required: what the columns mean (below)
      interactions.csv                # required: one row per labelled impression
      users.csv                       # optional: one row per user, keyed by user_column
      items.parquet                   # optional: one row per item, keyed by item_column
      edges/                          # optional: more graph relations, one table each, named
        item__made_by__brand.csv      #   <src_type>__<relation>__<dst_type>.{csv,parquet}
        user__follows__user.csv       #   columns: src, dst, [time], [weight]

``dataset.yaml`` (keys with a value after ``#`` are optional, the value is the default)::

    user_column: user_id             # user id column of interactions.* and users.*
    item_column: item_id             # item id column of interactions.* and items.*
    time_column: ts                  # numbers (any monotone unit) or ISO 8601 dates (-> unix s)
    tasks:                           # label columns of interactions.*, in label order
      - {name: click, column: clicked, kind: binary}     # 0/1; empty cell = missing label
      - {name: spend, column: amount, kind: regression}  # real; empty cell = missing label
    sparse_features: [country, brand]  # []  categorical columns of interactions/users/items
    dense_features: [price]            # []  numeric columns of interactions/users/items
    user_node_features: []             # []  numeric users.* columns -> node_features[user_type]
    item_node_features: [price]        # []  numeric items.* columns -> node_features[item_type]
    name: my_shop                      # the folder name
    user_type: user                    # user
    item_type: item                    # item
    interaction_relation: interacts    # interacts
    edge_task: click                   # null: every interaction row is an edge; else only rows
                                       # whose label of this binary task is 1

Example ``interactions.csv`` and ``items.csv`` for the YAML above::

    user_id,item_id,ts,clicked,amount,country      item_id,brand,price
    alice,sku1,2024-01-01 10:00,1,9.5,FR           sku1,acme,9.5
    bob,sku2,2024-01-02 11:30,0,,DE                sku2,zeta,20.0

and ``edges/item__made_by__brand.csv``::

    src,dst
    sku1,acme
    sku2,zeta

What the loader builds (:class:`~torchrec_gnn.data.dataset.GraphRecDataset`):

* **Node ids.** Raw ids (ints or strings) of one node type are gathered from every table that
  names that type (interactions, users/items, both ends of the edge tables) and numbered
  ``0..n-1`` in sorted order; ints sort numerically, and if any table holds strings for a type all
  its ids are compared as strings. The brand ``acme`` above becomes node ``0`` of type ``brand``.
* **Examples.** One per interaction row, labels in ``tasks`` order.
* **Edges.** Interaction rows (or the ``edge_task`` positives) become the timed relation
  ``(user_type, interaction_relation, item_type)``; an edge table is timed if it has a ``time``
  column (same units rule as ``time_column``) and static otherwise; a missing ``weight`` is ``0``.
* **Sparse features.** Sorted distinct values become ids ``1..K``; ``0`` means missing (empty cell,
  or a user/item absent from its table); cardinality ``K + 1``. A users/items column is looked up
  through the example's user/item; a feature name must be a column of exactly one table (the id
  columns count as interactions columns, so ``user_id`` can be a sparse feature).
* **Dense features / node features.** float32; missing values become ``0``.

Errors name the file and the column or key: a missing column (and the columns found), an empty
id, an unknown YAML key (and the valid keys), a binary label outside ``{0, 1}``.

The helpers :func:`id_index`, :func:`lookup_ids` and :func:`encode_categorical` are shared with the
MovieLens and KuaiRand loaders, so every loader numbers ids and categories the same way.

Example:
    >>> ds = load_tabular("my_shop")          # doctest: +SKIP
    >>> ds.task_names, ds.num_nodes            # doctest: +SKIP
    (['click', 'spend'], {'user': 2, 'item': 2, 'brand': 2})
"""

from __future__ import annotations

import difflib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import pandas as pd
import torch
import yaml

from torchrec_gnn.data.dataset import TASK_KINDS, GraphRecDataset, Interactions, TaskSpec
from torchrec_gnn.dataclass_yaml import build_dataclass
from torchrec_gnn.tables import TABLE_SUFFIXES, check_no_missing_values, read_edge_table, read_table, require_columns
from torchrec_gnn.typing import EdgeList, EdgeType

logger = logging.getLogger("torchrec_gnn.data")



@dataclass(frozen=True)
class TaskColumn:
    """One entry of ``tasks`` in ``dataset.yaml``.

    Args:
        name (str): task name.
        column (str): label column of the interactions table.
        kind (str): ``"binary"`` or ``"regression"``.
    """

    name: str
    column: str
    kind: str

    def __post_init__(self) -> None:
        if self.kind not in TASK_KINDS:
            raise ValueError(f"key 'kind' must be one of {TASK_KINDS}, got {self.kind!r}")


@dataclass(frozen=True)
class TabularConfig:
    """Contents of ``dataset.yaml`` (see the module docstring for the meaning of each key)."""

    user_column: str
    item_column: str
    time_column: str
    tasks: List[TaskColumn]
    sparse_features: List[str] = field(default_factory=list)
    dense_features: List[str] = field(default_factory=list)
    user_node_features: List[str] = field(default_factory=list)
    item_node_features: List[str] = field(default_factory=list)
    name: Optional[str] = None
    user_type: str = "user"
    item_type: str = "item"
    interaction_relation: str = "interacts"
    edge_task: Optional[str] = None

    @classmethod
    def from_yaml(cls, path: str | Path) -> "TabularConfig":
        """Parse ``path``; raise one ``ValueError`` listing every problem found."""
        path = Path(path)
        raw = yaml.safe_load(path.read_text())
        if not isinstance(raw, dict):
            raise ValueError(f"{path}: expected a mapping of keys, got {type(raw).__name__}")
        problems: List[str] = []
        config = build_dataclass(cls, raw, "", problems)
        if config is not None:
            problems += config.problems()
        if problems:
            raise ValueError(f"{path}: {len(problems)} problem(s):\n  " + "\n  ".join(f"{path.name}: {p}" for p in problems))
        return config

    def problems(self) -> List[str]:
        """What is wrong across keys (each key on its own is well-formed)."""
        problems = []
        names = [t.name for t in self.tasks]
        if not names:
            problems.append("key 'tasks' must list at least one task")
        if len(set(names)) != len(names):
            problems.append(f"task names must be unique, got {names}")
        binary = [t.name for t in self.tasks if t.kind == "binary"]
        if self.edge_task is not None and self.edge_task not in binary:
            problems.append(f"key 'edge_task' must name a binary task {binary}, got {self.edge_task!r}")
        for key in ("user_type", "item_type", "interaction_relation"):
            if "__" in getattr(self, key):
                problems.append(f"key {key!r} must not contain '__' (the edge type separator), got {getattr(self, key)!r}")
        for key in ("sparse_features", "dense_features"):
            columns = getattr(self, key)
            repeated = sorted({c for c in columns if columns.count(c) > 1})
            if repeated:
                problems.append(f"key {key!r} lists {repeated} more than once")
        return problems


def load_tabular(path: str | Path) -> GraphRecDataset:
    """Load a "bring your own data" folder (format in the module docstring).

    Args:
        path (str | Path): folder holding ``dataset.yaml`` and ``interactions.{csv,parquet}``.

    Returns:
        GraphRecDataset: validated dataset; ``examples`` follow the interactions row order.
    """
    root = Path(path)
    yaml_path = root / "dataset.yaml"
    if not yaml_path.is_file():
        raise FileNotFoundError(f"{root}: no dataset.yaml (the format is documented in torchrec_gnn.data.tabular)")
    cfg = TabularConfig.from_yaml(yaml_path)

    inter_file, inter = _read_named_table(root, "interactions", required=True)
    label_columns = [t.column for t in cfg.tasks]
    require_columns(inter_file, inter, [cfg.user_column, cfg.item_column, cfg.time_column, *label_columns])
    if inter.empty:
        raise ValueError(f"{inter_file}: no rows, only a header; the interactions table needs at least one example")
    sides: Dict[str, Tuple[str, str, pd.DataFrame, str]] = {}  # "users"/"items" -> (node type, file, table, key)
    for stem, node_type, key in (("users", cfg.user_type, cfg.user_column), ("items", cfg.item_type, cfg.item_column)):
        found = _read_named_table(root, stem, required=False)
        if found is not None:
            require_columns(found[0], found[1], [key])
            _check_unique(found[0], found[1], key)
            sides[stem] = (node_type, found[0], found[1], key)
    edge_tables = _read_edge_tables(root / "edges")
    _check_edge_node_types(edge_tables, cfg.user_type, cfg.item_type)

    # Raw id columns per node type, from every table that names the type.
    id_columns = [
        (cfg.user_type, inter_file, inter, cfg.user_column),
        (cfg.item_type, inter_file, inter, cfg.item_column),
    ]
    id_columns += list(sides.values())
    for node_type, file, frame, col in id_columns:
        check_no_missing_values(frame[col], f"{file}: id column {col!r}")
    for et, (file, frame) in edge_tables.items():  # read_edge_table checked these already
        id_columns += [(et[0], file, frame, "src"), (et[2], file, frame, "dst")]
    raw_ids: Dict[str, List[pd.Series]] = {}
    for node_type, file, frame, col in id_columns:
        raw_ids.setdefault(node_type, []).append(frame[col])
    index = {t: id_index(cols) for t, cols in raw_ids.items()}
    num_nodes = {t: len(ix) for t, ix in index.items()}

    user = lookup_ids(index[cfg.user_type], inter[cfg.user_column])
    item = lookup_ids(index[cfg.item_type], inter[cfg.item_column])
    timestamp = to_timestamps(inter[cfg.time_column], f"{inter_file}: column {cfg.time_column!r}")
    labels = np.stack(
        [
            label_values(inter[t.column], t.kind, f"{inter_file}: column {t.column!r} (task {t.name!r})")
            for t in cfg.tasks
        ],
        axis=1,
    )  # (N, T)

    # Feature sources: interactions rows directly, users/items through the example's node id.
    node_rows: Dict[str, Tuple[str, pd.DataFrame]] = {}  # stem -> (file, table without its key, row i = node i)
    for stem, (node_type, file, frame, key) in sides.items():
        pos = lookup_ids(index[node_type], frame[key])
        node_rows[stem] = (file, frame.drop(columns=key).set_axis(pos).reindex(np.arange(num_nodes[node_type])))
    gather = {"users": user, "items": item}

    def feature(name: str) -> Tuple[str, pd.Series, Optional[np.ndarray]]:
        found = [(inter_file, inter[name], None)] if name in inter.columns else []
        found += [(f, t[name], gather[s]) for s, (f, t) in node_rows.items() if name in t.columns]
        if len(found) != 1:
            files = [inter_file, *(f for f, _ in node_rows.values())]
            issue = "is in none of" if not found else "is ambiguous, it is in each of"
            raise ValueError(f"{yaml_path.name}: feature column {name!r} {issue} {[f for f, *_ in found] or files}")
        return found[0]

    sparse: Dict[str, torch.Tensor] = {}
    cardinality: Dict[str, int] = {}
    for name in cfg.sparse_features:
        _, values, rows = feature(name)
        codes, cardinality[name] = encode_categorical(values)
        sparse[name] = torch.from_numpy(codes if rows is None else codes[rows])
    dense_cols = []
    for name in cfg.dense_features:
        file, values, rows = feature(name)
        col = numeric_values(values, f"{file}: dense feature column {name!r}")
        dense_cols.append(col if rows is None else col[rows])
    dense = np.stack(dense_cols, axis=1) if dense_cols else np.zeros((len(inter), 0), np.float32)

    node_features: Dict[str, torch.Tensor] = {}
    for stem, node_type, columns in (
        ("users", cfg.user_type, cfg.user_node_features),
        ("items", cfg.item_type, cfg.item_node_features),
    ):
        if not columns:
            continue
        if stem not in node_rows:
            raise ValueError(
                f"{yaml_path.name}: key '{stem[:-1]}_node_features' needs a {stem}.csv or {stem}.parquet table"
            )
        file, table = node_rows[stem]
        require_columns(file, table, columns)
        node_features[node_type] = torch.from_numpy(
            np.stack([numeric_values(table[c], f"{file}: node feature column {c!r}") for c in columns], axis=1)
        )

    inter_type = (cfg.user_type, cfg.interaction_relation, cfg.item_type)
    if inter_type in edge_tables:
        raise ValueError(
            f"{edge_tables[inter_type][0]}: relation {inter_type} is already the interaction relation; rename one"
        )
    keep = np.ones(len(inter), dtype=bool)
    if cfg.edge_task is not None:
        keep = labels[:, [t.name for t in cfg.tasks].index(cfg.edge_task)] == 1
    edges: Dict[EdgeType, EdgeList] = {
        inter_type: EdgeList(
            src=torch.from_numpy(user[keep]), dst=torch.from_numpy(item[keep]), time=torch.from_numpy(timestamp[keep])
        )
    }
    for et, (file, frame) in edge_tables.items():
        edges[et] = EdgeList(
            src=torch.from_numpy(lookup_ids(index[et[0]], frame["src"])),
            dst=torch.from_numpy(lookup_ids(index[et[2]], frame["dst"])),
            time=torch.from_numpy(to_timestamps(frame["time"], f"{file}: column 'time'")) if "time" in frame else None,
            weight=torch.from_numpy(numeric_values(frame["weight"], f"{file}: column 'weight'"))
            if "weight" in frame
            else None,
        )

    ds = GraphRecDataset(
        name=cfg.name or root.resolve().name,
        tasks=[TaskSpec(t.name, t.kind) for t in cfg.tasks],
        user_type=cfg.user_type,
        item_type=cfg.item_type,
        num_nodes=num_nodes,
        examples=Interactions.from_arrays(
            user=user,
            item=item,
            timestamp=timestamp,
            labels=labels,
            dense=dense,
            sparse=sparse,
        ),
        edges=edges,
        dense_names=list(cfg.dense_features),
        sparse_cardinality=cardinality,
        node_features=node_features,
    )
    ds.validate()
    return ds


# ----------------------------------------------------------------------------------------------
# Helpers shared by every loader.


def id_index(columns: Sequence[pd.Series]) -> pd.Index:
    """Sorted distinct ids over ``columns``: ints numerically, or all as strings if any is not int.

    Position ``i`` of the returned index is node id ``i``; look ids up with :func:`lookup_ids`.
    """
    keys = _id_keys(columns, as_str=not all(_is_int_ids(c) for c in columns))
    uniq = pd.unique(np.concatenate(keys)) if keys else np.zeros(0, np.int64)
    return pd.Index(np.sort(uniq))


def lookup_ids(index: pd.Index, values: pd.Series) -> np.ndarray:
    """(len(values),) int64 node ids of raw ids ``values`` in ``index`` (from :func:`id_index`)."""
    (keys,) = _id_keys([values], as_str=index.dtype == object)
    pos = index.get_indexer(keys)
    if (pos < 0).any():
        raise KeyError(f"raw id {_show(keys[int(np.argmax(pos < 0))])} is not in the id index")
    return pos.astype(np.int64)


def encode_categorical(values: pd.Series) -> Tuple[np.ndarray, int]:
    """Categorical ``values`` -> ((N,) int64 ids, cardinality); ``0`` = missing, ``1..K`` = sorted values."""
    present = values.notna().to_numpy()
    if not pd.api.types.is_numeric_dtype(values):
        values = values.map(str, na_action="ignore")
    categories = np.sort(pd.unique(values[present]))
    codes = pd.Categorical(values, categories=categories).codes.astype(np.int64) + 1  # -1 (missing) -> 0
    return codes, len(categories) + 1


def numeric_values(values: pd.Series, where: str) -> np.ndarray:
    """(N,) float32 of a numeric column, missing values -> 0; raise naming ``where`` if not numeric."""
    if not (pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values)):
        raise ValueError(f"{where}: expected numbers, found {values.dtype} values such as {_first_value(values)}")
    return values.astype(np.float64).fillna(0.0).to_numpy(np.float32)


def label_values(values: pd.Series, kind: str, where: str) -> np.ndarray:
    """(N,) float64 labels (``NaN`` = missing); binary labels must be 0 or 1."""
    if not (pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values)):
        raise ValueError(f"{where}: labels must be numbers, found {values.dtype} values such as {_first_value(values)}")
    out = values.astype(np.float64).to_numpy()
    if kind == "binary":
        bad = ~np.isnan(out) & (out != 0) & (out != 1)
        if bad.any():
            row = int(np.argmax(bad))
            raise ValueError(
                f"{where}: binary label must be 0, 1 or empty, found {_show(values.iloc[row])} at row {row}"
            )
    return out


def to_timestamps(values: pd.Series, where: str) -> np.ndarray:
    """(N,) int64 times: numbers as they are (cast to int64), ISO 8601 dates as unix seconds; none missing."""
    check_no_missing_values(values, where)
    if pd.api.types.is_numeric_dtype(values):
        return values.to_numpy(np.int64)
    try:
        stamps = pd.to_datetime(values, utc=True, format="ISO8601")
    except (ValueError, TypeError) as err:
        raise ValueError(f"{where}: times must be numbers or ISO 8601 dates, could not parse: {err}") from err
    return ((stamps - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)).to_numpy(np.int64)


# ----------------------------------------------------------------------------------------------
# Private helpers of load_tabular.


def _find_table(folder: Path, stem: str) -> Optional[Path]:
    found = [folder / f"{stem}{s}" for s in TABLE_SUFFIXES if (folder / f"{stem}{s}").is_file()]
    if len(found) > 1:
        raise ValueError(f"{folder}: both {found[0].name} and {found[1].name} exist; keep one")
    return found[0] if found else None


def _read_named_table(folder: Path, stem: str, required: bool) -> Optional[Tuple[str, pd.DataFrame]]:
    path = _find_table(folder, stem)
    if path is None:
        if required:
            raise FileNotFoundError(f"{folder}: no {stem}.csv or {stem}.parquet")
        return None
    return path.name, read_table(path)


def _read_edge_tables(folder: Path) -> Dict[EdgeType, Tuple[str, pd.DataFrame]]:
    tables: Dict[EdgeType, Tuple[str, pd.DataFrame]] = {}
    if not folder.is_dir():
        return tables
    for path in sorted(p for p in folder.iterdir() if p.suffix in TABLE_SUFFIXES):
        file = f"edges/{path.name}"
        parts = path.stem.split("__")
        if len(parts) != 3 or not all(parts):
            raise ValueError(f"{file}: file name must be <src_type>__<relation>__<dst_type>{path.suffix}")
        et = (parts[0], parts[1], parts[2])
        if et in tables:
            raise ValueError(f"{file}: relation {et} is also in {tables[et][0]}; keep one")
        tables[et] = (file, read_edge_table(path, file))
    return tables


def _check_edge_node_types(edge_tables: Dict[EdgeType, Tuple[str, pd.DataFrame]], user_type: str, item_type: str) -> None:
    """Every edge file must connect to the examples' users or items, directly or through other
    edge files (a relation the examples never reach would train nothing); a new node type whose
    name is close to a known one is probably a typo and is logged loudly."""
    reached = {user_type, item_type}
    pending = dict(edge_tables)
    while True:
        joined = [et for et in pending if et[0] in reached or et[2] in reached]
        if not joined:
            break
        for et in joined:
            reached.update((et[0], et[2]))
            del pending[et]
    if pending:
        file = pending[next(iter(pending))][0]
        raise ValueError(
            f"{file}: none of its node types {sorted({t for et in pending for t in (et[0], et[2])})} is "
            f"{user_type!r}, {item_type!r} or a type the other edge files connect to them "
            f"({sorted(reached)}); check the type names in the file name"
        )
    known = [user_type, item_type]
    for et, (file, _) in edge_tables.items():
        for node_type in (et[0], et[2]):
            close = difflib.get_close_matches(node_type, known, n=1, cutoff=0.75)
            if node_type not in known and close:
                logger.warning("%s: node type %r is new (it is neither %r nor %r); did you mean %r?",
                               file, node_type, user_type, item_type, close[0])


def _check_unique(file: str, frame: pd.DataFrame, column: str) -> None:
    dup = frame[column].duplicated()
    if dup.any():
        row = int(np.argmax(dup.to_numpy()))
        raise ValueError(
            f"{file}: column {column!r} must be unique, id {_show(frame[column].iloc[row])} repeats at row {row}"
        )


def _show(value: Any) -> str:
    """repr of a cell, numpy scalars as plain Python values (``3``, not ``np.int64(3)``)."""
    return repr(value.item() if isinstance(value, np.generic) else value)


def _first_value(values: pd.Series) -> str:
    present = values.dropna()
    return _show(present.iloc[0]) if len(present) else "(only empty cells)"


def _is_int_ids(values: pd.Series) -> bool:
    if pd.api.types.is_integer_dtype(values) or pd.api.types.is_bool_dtype(values):
        return True
    if pd.api.types.is_float_dtype(values):
        arr = values.to_numpy()
        return bool(np.all(arr == np.floor(arr)))
    return False


def _id_keys(columns: Sequence[pd.Series], as_str: bool) -> List[np.ndarray]:
    """Comparable raw-id keys: int64 arrays, or object arrays of ``str`` (ints printed without ``.0``)."""
    keys = []
    for c in columns:
        if as_str:
            keys.append((c.astype(np.int64) if _is_int_ids(c) else c).map(str).to_numpy(dtype=object))
        else:
            keys.append(c.to_numpy(np.int64))
    return keys
