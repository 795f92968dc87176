import json
from pathlib import Path

import numpy as np
import pytest
import torch

from torchrec_gnn.graph.hetero_graph import HeteroGraph
from torchrec_gnn.typing import EdgeList

WATCH = ("user", "watches", "video")
NUM_NODES = {"user": 4, "video": 3}


def small_graph(**kwargs) -> HeteroGraph:
    edges = EdgeList(
        src=torch.tensor([0, 1, 1, 2, 3, 1]),
        dst=torch.tensor([0, 0, 2, 2, 2, 0]),
        time=torch.tensor([5, 3, 9, 1, 4, 2]),
        weight=torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 6.0]),
    )
    return HeteroGraph.from_edges(NUM_NODES, {WATCH: edges}, **kwargs)


def test_csc_layout_sorted_by_time_and_deduplicated() -> None:
    csc = small_graph().csc(WATCH)
    # video 0 <- users {0 (t=5), 1 (t=2, earliest of the duplicate pair)}; video 1 <- none;
    # video 2 <- users {2 (t=1), 3 (t=4), 1 (t=9)}
    assert csc.colptr.tolist() == [0, 2, 2, 5]
    assert csc.row.tolist() == [1, 0, 2, 3, 1]
    assert csc.time.tolist() == [2, 5, 1, 4, 9]
    assert csc.weight.tolist() == [6.0, 1.0, 4.0, 5.0, 3.0]
    assert csc.row.dtype == np.int32


def test_multigraph_keeps_parallel_edges_and_input_edge_ids(tmp_path: Path) -> None:
    graph = small_graph(keep_duplicates=True, edge_ids=True, add_reverse=True)
    csc = graph.csc(WATCH)
    # video 0 <- user 1 twice (t=2 and t=3) and user 0 (t=5), each with its own weight and id
    assert csc.colptr.tolist() == [0, 3, 3, 6]
    assert csc.row.tolist() == [1, 1, 0, 2, 3, 1]
    assert csc.time.tolist() == [2, 3, 5, 1, 4, 9]
    assert csc.weight.tolist() == [6.0, 2.0, 1.0, 4.0, 5.0, 3.0]
    assert csc.edge_id.tolist() == [5, 1, 0, 3, 4, 2]  # position in the input lists
    assert graph.csc(("video", "rev_watches", "user")).edge_id.tolist() == [0, 5, 1, 2, 3, 4]
    assert small_graph().csc(WATCH).edge_id is None
    loaded = HeteroGraph.load(graph.save(tmp_path / "g"), mmap=True, validate="full")
    assert loaded.csc(WATCH).edge_id.tolist() == csc.edge_id.tolist()


def test_edge_index_round_trip_and_reverse() -> None:
    graph = small_graph(add_reverse=True)
    assert graph.edge_types == [WATCH, ("video", "rev_watches", "user")]
    forward = {tuple(e) for e in graph.edge_index(WATCH).T.tolist()}
    reverse = {tuple(e[::-1]) for e in graph.edge_index(("video", "rev_watches", "user")).T.tolist()}
    assert forward == reverse == {(0, 0), (1, 0), (1, 2), (2, 2), (3, 2)}
    assert graph.num_edges() == 10


def test_accepts_edge_index_and_numpy_pairs() -> None:
    a = HeteroGraph.from_edges(NUM_NODES, {WATCH: torch.tensor([[0, 3], [1, 2]])})
    b = HeteroGraph.from_edges(NUM_NODES, {WATCH: (np.array([0, 3]), np.array([1, 2]))})
    assert a.edge_index(WATCH).tolist() == b.edge_index(WATCH).tolist() == [[0, 3], [1, 2]]


@pytest.mark.parametrize(
    "src, dst, match",
    [
        ([0, 4], [0, 0], r"\('user', 'watches', 'video'\): src: id 4 at position 1 is outside \[0, 4\)"),
        ([0, 1], [-1, 0], r"dst: id -1 at position 0 is outside \[0, 3\)"),
    ],
)
def test_bad_ids_name_relation_and_value(src, dst, match) -> None:
    with pytest.raises(ValueError, match=match):
        HeteroGraph.from_edges(NUM_NODES, {WATCH: (torch.tensor(src), torch.tensor(dst))})


def test_bad_dtype_and_unknown_node_type() -> None:
    with pytest.raises(TypeError, match="src: ids must be integers, got dtype float32"):
        HeteroGraph.from_edges(NUM_NODES, {WATCH: (torch.tensor([0.0]), torch.tensor([0]))})
    with pytest.raises(ValueError, match="node type 'author'"):
        HeteroGraph.from_edges(NUM_NODES, {("author", "made", "video"): (torch.tensor([0]), torch.tensor([0]))})


def test_save_load_mmap(tmp_path: Path) -> None:
    graph = small_graph(add_reverse=True)
    graph.save(tmp_path / "g")
    loaded = HeteroGraph.load(tmp_path / "g", mmap=True)
    assert loaded.num_nodes == graph.num_nodes and loaded.edge_types == graph.edge_types
    for et in graph.edge_types:
        for name in ("colptr", "row", "time", "weight"):
            np.testing.assert_array_equal(getattr(loaded.csc(et), name), getattr(graph.csc(et), name))
    assert isinstance(loaded.csc(WATCH).row, np.memmap)


def test_mapped_graph_pickles_as_its_directory(tmp_path: Path) -> None:
    import pickle

    graph = small_graph(add_reverse=True)
    graph.save(tmp_path / "g")
    mapped = HeteroGraph.load(tmp_path / "g", mmap=True)
    payload = pickle.dumps(mapped)
    assert len(payload) < 1000 and str(tmp_path / "g") in payload.decode("latin-1")
    copy = pickle.loads(payload)
    assert isinstance(copy.csc(WATCH).row, np.memmap)
    np.testing.assert_array_equal(copy.csc(WATCH).row, graph.csc(WATCH).row)
    in_memory = pickle.loads(pickle.dumps(graph))
    np.testing.assert_array_equal(in_memory.csc(WATCH).time, graph.csc(WATCH).time)


def test_load_truncated_or_missing_fails_clearly(tmp_path: Path) -> None:
    small_graph().save(tmp_path / "g")
    row_file = tmp_path / "g" / "user__watches__video.row.npy"
    row_file.write_bytes(row_file.read_bytes()[:-8])
    with pytest.raises(ValueError, match=r"user__watches__video\.row\.npy.*row of relation"):
        HeteroGraph.load(tmp_path / "g")
    with pytest.raises(FileNotFoundError, match="graph.json is missing"):
        HeteroGraph.load(tmp_path / "nowhere")


def test_load_mismatched_metadata_fails(tmp_path: Path) -> None:
    small_graph().save(tmp_path / "g")
    HeteroGraph.from_edges({"user": 4, "video": 5}, {WATCH: (torch.tensor([0]), torch.tensor([4]))}).save(tmp_path / "h")
    (tmp_path / "g" / "user__watches__video.colptr.npy").write_bytes((tmp_path / "h" / "user__watches__video.colptr.npy").read_bytes())
    with pytest.raises(ValueError, match=r"colptr of relation .* has shape \(6,\), expected \(4,\)"):
        HeteroGraph.load(tmp_path / "g")


def test_corrupt_graph_files_fail_clearly_never_crash(tmp_path: Path) -> None:
    graph = small_graph(add_reverse=True)
    graph.save(tmp_path / "g")
    stem = tmp_path / "g" / "user__watches__video"
    row = np.load(f"{stem}.row.npy")
    # Out-of-range source ids (same shape): the full check names file, position and value; the
    # sampler would index past its buffers with them.
    bad = row.copy()
    bad[1] = 10**6
    np.save(f"{stem}.row.npy", bad)
    HeteroGraph.load(tmp_path / "g")  # the cheap default does not read every edge
    with pytest.raises(ValueError, match=r"user__watches__video\.row\.npy: row of relation .* has source id 1000000 at position 1, outside \[0, 4\)"):
        HeteroGraph.load(tmp_path / "g", validate="full")
    np.save(f"{stem}.row.npy", row)
    # A colptr that falls is caught by the cheap check.
    colptr = np.load(f"{stem}.colptr.npy")
    falling = colptr.copy()
    falling[2], falling[3] = falling[3], falling[2] - 1
    np.save(f"{stem}.colptr.npy", falling)
    with pytest.raises(ValueError, match=r"colptr\.npy: colptr of relation .* must rise from 0 to .* it falls at position 2"):
        HeteroGraph.load(tmp_path / "g")
    np.save(f"{stem}.colptr.npy", colptr)
    # Edge times out of order within a segment break the kernels' binary search.
    time = np.load(f"{stem}.time.npy")
    segment = int(np.argmax(np.diff(colptr) >= 2))
    shuffled = time.copy()
    shuffled[colptr[segment]] = time[colptr[segment] + 1] + 1
    np.save(f"{stem}.time.npy", shuffled)
    with pytest.raises(ValueError, match=r"time\.npy: time of relation .* older than the one before it"):
        HeteroGraph.load(tmp_path / "g", validate="full")
    np.save(f"{stem}.time.npy", time)
    assert HeteroGraph.load(tmp_path / "g", validate="full").num_edges() == graph.num_edges()
    # Metadata: a missing key or a negative count names the problem.
    meta_path = tmp_path / "g" / "graph.json"
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({k: v for k, v in meta.items() if k != "relations"}))
    with pytest.raises(ValueError, match=r"graph.json: corrupt graph metadata \(missing or malformed 'relations'\)"):
        HeteroGraph.load(tmp_path / "g")
    meta_path.write_text(json.dumps({**meta, "num_nodes": {**meta["num_nodes"], "user": -3}}))
    with pytest.raises(ValueError, match=r"counts must be ints >= 0, got \{'user': -3\}"):
        HeteroGraph.load(tmp_path / "g")
    with pytest.raises(ValueError, match=r"validate must be one of \['cheap', 'full'\]"):
        HeteroGraph.load(tmp_path / "g", validate="all")


def test_from_tables(tmp_path: Path) -> None:
    import pandas as pd

    pd.DataFrame({"src": [0, 1], "dst": [2, 2], "time": [3, 4]}).to_csv(tmp_path / "w.csv", index=False)
    pd.DataFrame({"src": [0, 1], "dst": [2, 2]}).to_parquet(tmp_path / "w.parquet")
    a = HeteroGraph.from_tables(NUM_NODES, {WATCH: tmp_path / "w.csv"})
    b = HeteroGraph.from_tables(NUM_NODES, {WATCH: tmp_path / "w.parquet"})
    assert a.csc(WATCH).time.tolist() == [3, 4] and b.csc(WATCH).time is None
    pd.DataFrame({"source": [0]}).to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(ValueError, match=r"bad\.csv \(relation .*\): missing column\(s\) \['src', 'dst'\]; columns found: \['source'\]"):
        HeteroGraph.from_tables(NUM_NODES, {WATCH: tmp_path / "bad.csv"})
    pd.DataFrame({"src": [0, None], "dst": [1, 2]}).to_csv(tmp_path / "hole.csv", index=False)
    with pytest.raises(ValueError, match=r"hole\.csv \(relation .*\): id column 'src' has 1 empty value\(s\), first at row 1"):
        HeteroGraph.from_tables(NUM_NODES, {WATCH: tmp_path / "hole.csv"})


def test_summary_lists_types_and_degrees() -> None:
    text = repr(small_graph())
    assert "2 node types, 1 relations, 5 edges" in text
    assert "user__watches__video" in text and "1.67" in text  # mean in-degree 5/3
