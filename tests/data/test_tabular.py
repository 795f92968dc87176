"""Bring-your-own-data loader: a round trip through a folder written here, and every error message."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from torchrec_gnn.data.tabular import encode_categorical, id_index, load_tabular, lookup_ids

CONFIG: Dict[str, Any] = {
    "user_column": "user_id",
    "item_column": "item_id",
    "time_column": "ts",
    "tasks": [
        {"name": "click", "column": "clicked", "kind": "binary"},
        {"name": "spend", "column": "amount", "kind": "regression"},
    ],
    "sparse_features": ["country", "brand", "item_id"],
    "dense_features": ["price", "age"],
    "user_node_features": ["age"],
    "item_node_features": ["price"],
}


def _write(root: Path, config: Dict[str, Any] = CONFIG) -> Path:
    root.mkdir(exist_ok=True)
    (root / "dataset.yaml").write_text(yaml.safe_dump(config))
    pd.DataFrame(
        {
            "user_id": ["carol", "alice", "bob", "alice"],
            "item_id": [20, 3, 3, 100],
            "ts": ["2024-01-03", "2024-01-01", "2024-01-02 12:00", "2024-01-04"],
            "clicked": [1, 0, np.nan, 1],
            "amount": [9.5, np.nan, 0.0, 20.0],
            "country": ["FR", "DE", None, "FR"],
        }
    ).to_csv(root / "interactions.csv", index=False)
    pd.DataFrame({"user_id": ["alice", "bob", "dave"], "age": [30.0, None, 41.0]}).to_parquet(root / "users.parquet")
    pd.DataFrame({"item_id": [3, 20, 100], "brand": ["zeta", "acme", "acme"], "price": [1.5, 2.5, 3.5]}).to_csv(
        root / "items.csv", index=False
    )
    (root / "edges").mkdir(exist_ok=True)
    pd.DataFrame({"src": [3, 20, 100], "dst": ["zeta", "acme", "acme"]}).to_csv(
        root / "edges" / "item__made_by__brand.csv", index=False
    )
    pd.DataFrame({"src": ["alice", "erin"], "dst": ["bob", "alice"], "time": [5, 6], "weight": [0.5, 1.0]}).to_csv(
        root / "edges" / "user__follows__user.csv", index=False
    )
    return root


def test_round_trip(tmp_path: Path) -> None:
    ds = load_tabular(_write(tmp_path / "shop"))
    assert ds.name == "shop" and ds.task_names == ["click", "spend"]
    # users from interactions, users table and follows edges, sorted: alice bob carol dave erin
    assert ds.num_nodes == {"user": 5, "item": 3, "brand": 2}
    ex = ds.examples
    assert ex.user.tolist() == [2, 0, 1, 0]
    assert ex.item.tolist() == [1, 0, 0, 2]  # 3 < 20 < 100 numerically
    day = 86_400
    assert ex.timestamp.tolist() == [1704240000, 1704067200, 1704067200 + day + day // 2, 1704067200 + 3 * day]
    assert torch.allclose(ex.labels, torch.tensor([[1, 9.5], [0, np.nan], [np.nan, 0], [1, 20]]), equal_nan=True)
    # sparse: sorted values -> 1..K, 0 = missing; brand looked up through the item
    assert ex.sparse["country"].tolist() == [2, 1, 0, 2] and ds.sparse_cardinality["country"] == 3
    assert ex.sparse["brand"].tolist() == [1, 2, 2, 1] and ds.sparse_cardinality["brand"] == 3
    assert ex.sparse["item_id"].tolist() == [2, 1, 1, 3]  # the id column itself, as a feature of the interactions
    # dense: price through the item, age through the user (carol has no row, bob has no age -> 0)
    assert ds.dense_names == ["price", "age"]
    assert ex.dense.tolist() == [[2.5, 0.0], [1.5, 30.0], [1.5, 0.0], [3.5, 30.0]]
    assert ds.node_features["user"].flatten().tolist() == [30.0, 0.0, 0.0, 41.0, 0.0]
    assert ds.node_features["item"].flatten().tolist() == [1.5, 2.5, 3.5]
    inter = ds.edges[("user", "interacts", "item")]
    assert torch.equal(inter.src, ex.user) and torch.equal(inter.time, ex.timestamp)
    brand = ds.edges[("item", "made_by", "brand")]
    assert brand.time is None and brand.src.tolist() == [0, 1, 2] and brand.dst.tolist() == [1, 0, 0]
    follows = ds.edges[("user", "follows", "user")]
    assert follows.src.tolist() == [0, 4] and follows.time.tolist() == [5, 6] and follows.weight.tolist() == [0.5, 1.0]
    ds.validate()


def test_edge_task_names_and_parquet_interactions(tmp_path: Path) -> None:
    root = _write(
        tmp_path / "shop",
        {**CONFIG, "edge_task": "click", "interaction_relation": "buys", "user_type": "buyer", "name": "x"},
    )
    pd.read_csv(root / "interactions.csv").to_parquet(root / "interactions.parquet")
    (root / "interactions.csv").unlink()
    (root / "edges" / "user__follows__user.csv").rename(root / "edges" / "buyer__follows__buyer.csv")
    ds = load_tabular(root)
    assert ds.name == "x" and ds.user_type == "buyer"
    edges = ds.edges[("buyer", "buys", "item")]
    assert edges.src.tolist() == [2, 0]  # only the clicked rows (carol, alice at t4)
    ds.validate()


def test_shared_helpers_are_deterministic() -> None:
    index = id_index([pd.Series([10, 2]), pd.Series(["2", "b"])])  # strings present: compare as strings
    assert list(index) == ["10", "2", "b"]
    assert lookup_ids(index, pd.Series([2, 10])).tolist() == [1, 0]
    codes, card = encode_categorical(pd.Series(["b", None, "a", "b"]))
    assert codes.tolist() == [2, 0, 1, 2] and card == 3


def _expect(tmp_path: Path, error: type, match: str, **changes: Any) -> None:
    root = _write(tmp_path / "shop", {**CONFIG, **changes.pop("config", {})})
    for name, edit in changes.items():
        path = root / name.replace("__slash__", "/")
        edit(path)
    with pytest.raises(error, match=match):
        load_tabular(root)


def _edit_csv(**columns: Any) -> Any:
    def edit(path: Path) -> None:
        frame = pd.read_csv(path)
        for col, value in columns.items():
            if value is None:
                frame = frame.drop(columns=col)
            else:
                frame[col] = value
        frame.to_csv(path, index=False)

    return edit


def test_error_missing_interaction_column(tmp_path: Path) -> None:
    _expect(
        tmp_path, ValueError, r"interactions\.csv: missing column\(s\) \['ts'\]; columns found: \['user_id', 'item_id', 'clicked'",
        **{"interactions.csv": _edit_csv(ts=None)},
    )  # fmt: skip


def test_error_empty_id(tmp_path: Path) -> None:
    _expect(
        tmp_path, ValueError, r"interactions\.csv: id column 'user_id' has 1 empty value\(s\), first at row 2",
        **{"interactions.csv": _edit_csv(user_id=["a", "b", None, "c"])},
    )  # fmt: skip


def test_error_empty_id_in_edge_table(tmp_path: Path) -> None:
    _expect(
        tmp_path, ValueError, r"edges/item__made_by__brand\.csv: id column 'dst' has 1 empty value\(s\), first at row 0",
        **{"edges__slash__item__made_by__brand.csv": _edit_csv(dst=[None, "acme", "acme"])},
    )  # fmt: skip


def test_error_binary_label(tmp_path: Path) -> None:
    _expect(
        tmp_path, ValueError,
        r"interactions\.csv: column 'clicked' \(task 'click'\): binary label must be 0, 1 or empty, found 2\.0 at row 1",
        **{"interactions.csv": _edit_csv(clicked=[1, 2, np.nan, 0])},
    )  # fmt: skip




def test_task_without_any_label_is_said(tmp_path: Path) -> None:
    from unittest import mock

    from torchrec_gnn.data import dataset as dataset_module

    root = _write(tmp_path / "shop")
    _edit_csv(clicked=[np.nan] * 4)(root / "interactions.csv")
    with mock.patch.object(dataset_module.logger, "warning") as warning:
        load_tabular(root)
    [(message, *args)] = [call.args for call in warning.call_args_list]
    assert "has no label in any of the %d examples" in message and args[1:] == ["click", 4]


def test_error_unknown_yaml_keys_all_listed(tmp_path: Path) -> None:
    config = {
        **CONFIG,
        "user_col": "x",
        "tasks": [{"name": "click", "column": "clicked", "kind": "binary", "weight": 2}],
    }
    match = (
        r"2 problem\(s\):\n  dataset\.yaml: user_col: unknown key; valid keys of the config: \['dense_features', .*\]\n"
        r"  dataset\.yaml: tasks\[0\]\.weight: unknown key; valid keys of tasks\[0\]: \['column', 'kind', 'name'\]"
    )
    _expect(tmp_path, ValueError, match, config=config)


def test_error_bad_yaml_values(tmp_path: Path) -> None:
    # Each key checked on its own: every problem listed at once.
    config = {k: v for k, v in CONFIG.items() if k != "time_column"}
    config["tasks"] = [{"name": "click", "column": "clicked", "kind": "ranking"}]
    config["user_column"] = 3
    with pytest.raises(ValueError) as info:
        load_tabular(_write(tmp_path / "shop", config))
    message = str(info.value)
    assert "3 problem(s)" in message
    assert "dataset.yaml: time_column: missing required key" in message
    assert "dataset.yaml: tasks[0]: key 'kind' must be one of ('binary', 'regression'), got 'ranking'" in message
    assert "dataset.yaml: user_column: expected str, got 3" in message
    # Then the checks across keys, again all at once.
    config = {**CONFIG, "edge_task": "spend", "item_type": "shop__item"}
    config["tasks"] = [{"name": "spend", "column": "amount", "kind": "regression"}]
    with pytest.raises(ValueError) as info:
        load_tabular(_write(tmp_path / "shop2", config))
    message = str(info.value)
    assert "dataset.yaml: key 'edge_task' must name a binary task [], got 'spend'" in message
    assert "dataset.yaml: key 'item_type' must not contain '__' (the edge type separator), got 'shop__item'" in message


def test_error_unknown_feature_column(tmp_path: Path) -> None:
    _expect(
        tmp_path, ValueError,
        r"dataset\.yaml: feature column 'colour' is in none of \['interactions\.csv', 'users\.parquet', 'items\.csv'\]",
        config={"sparse_features": ["colour"]},
    )  # fmt: skip


def test_error_ambiguous_feature_column(tmp_path: Path) -> None:
    _expect(
        tmp_path, ValueError, r"feature column 'brand' is ambiguous, it is in each of \['interactions\.csv', 'items\.csv'\]",
        **{"interactions.csv": _edit_csv(brand=["a", "b", "c", "d"])},
    )  # fmt: skip


def test_error_non_numeric_dense(tmp_path: Path) -> None:
    _expect(
        tmp_path, ValueError, r"interactions\.csv: dense feature column 'country': expected numbers, found object values such as 'FR'",
        config={"dense_features": ["country"]},
    )  # fmt: skip


def test_error_edge_file_name_and_columns(tmp_path: Path) -> None:
    root = _write(tmp_path / "shop")
    (root / "edges" / "item__brand.csv").write_text("src,dst\n3,zeta\n")
    with pytest.raises(
        ValueError, match=r"edges/item__brand\.csv: file name must be <src_type>__<relation>__<dst_type>\.csv"
    ):
        load_tabular(root)
    (root / "edges" / "item__brand.csv").unlink()
    (root / "edges" / "item__sold_in__shop.csv").write_text("src,dst,wieght\n3,s1,1\n")
    with pytest.raises(ValueError, match=r"edges/item__sold_in__shop\.csv: unknown column\(s\) \['wieght'\]"):
        load_tabular(root)


def test_error_duplicate_key_and_two_formats(tmp_path: Path) -> None:
    root = _write(tmp_path / "shop")
    pd.DataFrame({"item_id": [3, 3], "brand": ["a", "b"], "price": [1, 2]}).to_csv(root / "items.csv", index=False)
    with pytest.raises(ValueError, match=r"items\.csv: column 'item_id' must be unique, id 3 repeats at row 1"):
        load_tabular(root)
    pd.DataFrame({"item_id": [3]}).to_parquet(root / "items.parquet")
    with pytest.raises(ValueError, match=r"both items\.csv and items\.parquet exist; keep one"):
        load_tabular(root)


def test_error_missing_files(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"no dataset\.yaml"):
        load_tabular(tmp_path)
    root = _write(tmp_path / "shop")
    (root / "interactions.csv").unlink()
    with pytest.raises(FileNotFoundError, match=r"no interactions\.csv or interactions\.parquet"):
        load_tabular(root)


def test_error_unparseable_time(tmp_path: Path) -> None:
    _expect(
        tmp_path, ValueError, r"interactions\.csv: column 'ts': times must be numbers or ISO 8601 dates, could not parse",
        **{"interactions.csv": _edit_csv(ts=["2024-01-01", "yesterday", "2024-01-02", "2024-01-03"])},
    )  # fmt: skip


def test_error_edge_file_the_examples_never_reach_and_typo_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = _write(tmp_path / "shop")
    (root / "edges" / "itemz__similar__widget.csv").write_text("src,dst\na,b\n")
    with pytest.raises(ValueError, match=r"edges/itemz__similar__widget\.csv: none of its node types \['itemz', 'widget'\] "
                                         r"is 'user', 'item' or a type the other edge files connect to them"):
        load_tabular(root)
    (root / "edges" / "itemz__similar__widget.csv").unlink()
    # Chained new types are fine: brand is reached through item, brand__owned_by__firm through brand.
    (root / "edges" / "brand__owned_by__firm.csv").write_text("src,dst\nacme,f1\n")
    (root / "edges" / "usr__likes__item.csv").write_text("src,dst\nu9,3\n")
    with caplog.at_level("WARNING", logger="torchrec_gnn.data"):
        ds = load_tabular(root)
    assert {"firm", "usr"} <= set(ds.num_nodes)
    assert "edges/usr__likes__item.csv: node type 'usr' is new (it is neither 'user' nor 'item'); did you mean 'user'?" in caplog.text
    assert "firm" not in caplog.text and "brand" not in caplog.text


def test_error_header_only_interactions(tmp_path: Path) -> None:
    root = _write(tmp_path / "shop")
    (root / "interactions.csv").write_text("user_id,item_id,ts,clicked,amount,country\n")
    with pytest.raises(ValueError, match=r"interactions\.csv: no rows, only a header"):
        load_tabular(root)


def test_no_interaction_older_than_the_training_examples_is_said(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from torchrec_gnn.data.split import time_split

    ds = load_tabular(_write(tmp_path / "shop"))
    with caplog.at_level("WARNING", logger="torchrec_gnn.data"):
        time_split(ds, history_fraction=0.0, val_fraction=0.25, test_fraction=0.25)
    assert "the graph holds no user__interacts__item edge older than the first training example" in caplog.text
    assert "set data.history_fraction > 0" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="torchrec_gnn.data"):
        time_split(ds, history_fraction=0.5, val_fraction=0.2, test_fraction=0.2)
    assert "graph holds no" not in caplog.text
