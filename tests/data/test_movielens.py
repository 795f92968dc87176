"""MovieLens loader: real ml-100k (RecBole layout, with KG) and synthetic files in both layouts."""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Dict, List

import pandas as pd
import pytest
import torch

from torchrec_gnn.data.dataset import GraphRecDataset
from torchrec_gnn.data.movielens import GROUPLENS_GENRES, load_movielens, relation_name
from torchrec_gnn.data.paths import default_data_dir

ML100K = default_data_dir() / "ml-100k-recbole"


@pytest.fixture(scope="module")
def ml100k() -> GraphRecDataset:
    if not (ML100K / "ml-100k.inter.gz").is_file():
        pytest.skip(f"ml-100k not found under {ML100K} (set TORCHREC_GNN_DATA_DIR)")
    return load_movielens(ML100K)


def test_ml100k_counts_and_labels(ml100k: GraphRecDataset) -> None:
    ds = ml100k
    assert ds.num_nodes["user"] == 943 and ds.num_nodes["item"] == 1682
    assert len(ds.examples) == 100_000
    assert ds.task_names == ["like", "rating"]
    like, rating = ds.examples.labels[:, 0], ds.examples.labels[:, 1]
    assert like.mean().item() == pytest.approx(0.554, abs=1e-3)
    assert torch.equal(like, (rating >= 4).float())
    assert set(rating.unique().tolist()) == {1.0, 2.0, 3.0, 4.0, 5.0}
    ds.validate()


def test_ml100k_graph_and_kg(ml100k: GraphRecDataset) -> None:
    ds = ml100k
    rates = ds.edges[("user", "rates", "item")]
    assert len(rates) == 100_000 and rates.time is not None
    assert torch.equal(rates.weight, ds.examples.labels[:, 1])
    assert ds.num_nodes["entity"] == 34_628
    assert len(ds.edges[("item", "links", "entity")]) == 1_598
    kg = {et[1]: len(e) for et, e in ds.edges.items() if et[0] == "entity"}
    assert len(kg) == 24 and sum(kg.values()) == 91_631
    assert kg["film_film_genre"] == 7_184 and kg["film_film_actor"] == 40_152
    assert all(e.time is None for et, e in ds.edges.items() if et != ("user", "rates", "item"))
    assert ds.num_nodes["genre"] == 19


def test_ml100k_ids_sorted_and_features(ml100k: GraphRecDataset) -> None:
    raw = pd.read_csv(ML100K / "ml-100k.inter.gz", sep="\t")
    # raw ids 1..943 / 1..1682 map to 0..n-1 in sorted order
    assert torch.equal(ml100k.examples.user, torch.from_numpy(raw["user_id:token"].to_numpy() - 1))
    assert torch.equal(ml100k.examples.item, torch.from_numpy(raw["item_id:token"].to_numpy() - 1))
    ex = ml100k.examples
    assert set(ex.sparse) == {
        "user_id",
        "item_id",
        "age_bucket",
        "gender",
        "occupation",
        "zip_prefix",
        "release_decade",
        "first_genre",
    }
    assert ml100k.sparse_cardinality["gender"] == 3 and ml100k.sparse_cardinality["occupation"] == 22
    assert ml100k.dense_names == ["num_genres", "release_year", "user_age"] and ex.dense.shape == (100_000, 3)
    assert ml100k.node_features["user"].shape == (943, 1 + 2 + 21)
    assert ml100k.node_features["item"].shape == (1682, 1 + 19)
    # user 1 is 24, M, technician (first row of ml-100k.user): bucket 18-24 is id 2 (0 = missing, 1 = <18)
    row = int((ex.user == 0).nonzero()[0, 0])
    assert ex.sparse["age_bucket"][row].item() == 2


# ----------------------------------------------------------------------------------------------
# Synthetic files: GroupLens and RecBole layouts of the same tiny data.

USERS = [(1, 24, "M", "technician", "85711"), (2, 53, "F", "other", "94043"), (3, 15, "M", "student", "T8H1N"),
         (10, 60, "F", "writer", "01002")]  # fmt: skip
ITEMS = [(1, "01-Jan-1995", ["Animation", "Comedy"]), (2, "", ["unknown"]), (5, "12-Mar-1977", ["Sci-Fi", "War"]),
         (7, "01-Jan-1950", [])]  # fmt: skip
RATINGS = [(1, 1, 5, 100), (1, 2, 3, 90), (2, 1, 4, 80), (2, 5, 1, 70), (3, 5, 5, 60), (10, 7, 2, 50), (10, 1, 4, 40)]


def _write_grouplens(root: Path) -> None:
    root.mkdir()
    (root / "u.data").write_text("".join(f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in RATINGS))
    (root / "u.user").write_text("".join("|".join(map(str, row)) + "\n" for row in USERS))
    lines = []
    for item, date, genres in ITEMS:
        flags = "|".join("1" if g in genres else "0" for g in GROUPLENS_GENRES)
        lines.append(f"{item}|Movie {item} (caf\xe9)|{date}||http://example.org/{item}|{flags}\n")
    (root / "u.item").write_bytes("".join(lines).encode("latin-1"))


def _write_atomic(path: Path, header: List[str], rows: List[tuple]) -> None:
    text = "\t".join(header) + "\n" + "".join("\t".join(map(str, r)) + "\n" for r in rows)
    with gzip.open(path, "wt") as f:
        f.write(text)


def _write_recbole(root: Path, with_kg: bool) -> None:
    root.mkdir()
    _write_atomic(
        root / "tiny.inter.gz", ["user_id:token", "item_id:token", "rating:float", "timestamp:float"], RATINGS
    )
    _write_atomic(
        root / "tiny.user.gz",
        ["user_id:token", "age:token", "gender:token", "occupation:token", "zip_code:token"],
        USERS,
    )
    item_rows = [(i, f"Movie {i}", d[-4:], " ".join(g)) for i, d, g in ITEMS]
    _write_atomic(
        root / "tiny.item.gz",
        ["item_id:token", "movie_title:token_seq", "release_year:token", "class:token_seq"],
        item_rows,
    )
    if with_kg:
        _write_atomic(root / "tiny.link.gz", ["item_id:token", "entity_id:token"], [(1, "m.a"), (5, "m.b")])
        kg = [("m.a", "film.film.genre", "m.g"), ("m.b", "film.film.genre", "m.g"), ("m.b", "film.film.sequel", "m.a")]
        _write_atomic(root / "tiny.kg.gz", ["head_id:token", "relation_id:token", "tail_id:token"], kg)


def _tensors(ds: GraphRecDataset) -> Dict[str, torch.Tensor]:
    ex = ds.examples
    out = {"user": ex.user, "item": ex.item, "timestamp": ex.timestamp, "labels": ex.labels, "dense": ex.dense}
    out.update({f"sparse.{k}": v for k, v in ex.sparse.items()})
    out.update({f"node.{k}": v for k, v in ds.node_features.items()})
    for et, e in ds.edges.items():
        out.update({f"{et}.src": e.src, f"{et}.dst": e.dst})
    return out


def test_grouplens_layout_matches_recbole_layout(tmp_path: Path) -> None:
    _write_grouplens(tmp_path / "gl")
    _write_recbole(tmp_path / "rb", with_kg=False)
    gl, rb = load_movielens(tmp_path / "gl"), load_movielens(tmp_path / "rb")
    assert gl.num_nodes == rb.num_nodes == {"user": 4, "item": 4, "genre": 5}
    a, b = _tensors(gl), _tensors(rb)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key], b[key], equal_nan=True), key
    assert gl.sparse_cardinality == rb.sparse_cardinality
    # raw user 10 -> node 3, raw item 7 -> node 3 (sorted numerically, not as strings)
    assert gl.examples.user.tolist() == [0, 0, 1, 1, 2, 3, 3]
    assert gl.examples.item.tolist() == [0, 1, 0, 2, 2, 3, 0]
    assert gl.examples.labels[:, 0].tolist() == [1, 0, 1, 0, 1, 0, 1]
    # missing release date -> release_decade 0 (missing); item without genres -> first_genre 0
    item_of_row = gl.examples.item
    assert gl.examples.sparse["release_decade"][item_of_row == 1].unique().tolist() == [0]
    assert gl.examples.sparse["first_genre"][item_of_row == 3].unique().tolist() == [0]
    assert gl.examples.sparse["age_bucket"].tolist() == [2, 2, 6, 6, 1, 7, 7]  # ages 24, 53, 15, 60
    gl.validate()


def test_recbole_kg_relations(tmp_path: Path) -> None:
    _write_recbole(tmp_path / "rb", with_kg=True)
    ds = load_movielens(tmp_path / "rb")
    assert ds.num_nodes["entity"] == 3  # m.a, m.b, m.g
    link = ds.edges[("item", "links", "entity")]
    assert link.src.tolist() == [0, 2] and link.dst.tolist() == [0, 1]
    genre = ds.edges[("entity", "film_film_genre", "entity")]
    assert genre.src.tolist() == [0, 1] and genre.dst.tolist() == [2, 2]
    assert len(ds.edges[("entity", "film_film_sequel", "entity")]) == 1
    assert relation_name("film.film_genre.films-in") == "film_film_genre_films_in"
    assert all("__" not in et[1] for et in ds.edges)


def test_negative_sampling(tmp_path: Path) -> None:
    _write_grouplens(tmp_path / "gl")
    ds = load_movielens(tmp_path / "gl", negatives_per_positive=2, seed=3)
    n_pos = len(RATINGS)
    assert ds.task_names == ["like", "rating", "watch"] and len(ds.examples) == 3 * n_pos
    labels = ds.examples.labels
    assert labels[:n_pos, 2].eq(1).all() and labels[n_pos:, 2].eq(0).all()
    assert torch.isnan(labels[n_pos:, :2]).all()
    rated = set(zip(ds.examples.user[:n_pos].tolist(), ds.examples.item[:n_pos].tolist(), strict=True))
    negatives = set(zip(ds.examples.user[n_pos:].tolist(), ds.examples.item[n_pos:].tolist(), strict=True))
    assert not rated & negatives
    assert torch.equal(ds.examples.timestamp[n_pos:], ds.examples.timestamp[:n_pos].repeat_interleave(2))
    assert len(ds.edges[("user", "rates", "item")]) == n_pos  # negatives are not graph edges
    again = load_movielens(tmp_path / "gl", negatives_per_positive=2, seed=3)
    assert torch.equal(again.examples.item, ds.examples.item)
    ds.validate()


def test_unknown_layout_lists_expected_files(tmp_path: Path) -> None:
    (tmp_path / "ratings.csv").write_text("x\n")
    with pytest.raises(
        FileNotFoundError,
        match=r"expected RecBole files <name>\.inter.*GroupLens files u\.data, u\.user, u\.item; found \['ratings\.csv'\]",
    ):
        load_movielens(tmp_path)


def test_missing_column_names_file(tmp_path: Path) -> None:
    _write_recbole(tmp_path / "rb", with_kg=False)
    _write_atomic(tmp_path / "rb" / "tiny.user.gz", ["user_id:token", "age:token"], [(1, 24)])
    with pytest.raises(ValueError, match=r"tiny\.user\.gz: missing column\(s\) \['gender', 'occupation', 'zip_code'\]"):
        load_movielens(tmp_path / "rb")


def test_bad_rating_names_file_and_row(tmp_path: Path) -> None:
    _write_grouplens(tmp_path / "gl")
    (tmp_path / "gl" / "u.data").write_text("1\t1\t5\t100\n1\t2\tfive\t90\n")
    with pytest.raises(ValueError, match=r"u\.data: column 3 \(rating\): expected a number, found 'five' at row 1"):
        load_movielens(tmp_path / "gl")
