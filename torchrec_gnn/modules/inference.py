"""Layer-wise full-graph inference: every node's GNN embedding, without sampling.

The two-stage baseline exports node embeddings the way PyG's inference examples do
(``SAGE.inference`` in ``examples/ogbn_products_sage.py``): instead of an L-hop neighbourhood
per node, layer ``l`` runs once over *all* nodes with *all* their neighbours, in chunks of
destination nodes, before layer ``l + 1`` starts. Each edge is then touched once per layer,
so the cost is O(L * E) rather than the exponential L-hop fan-in of per-node sampling.

Notation: N_t nodes of type t in the graph, C destination nodes per chunk, D node-table
width, H GNN width.
"""

from __future__ import annotations

from typing import Dict, List, Mapping, Optional

import numpy as np
import torch
from tqdm import tqdm

from torchrec_gnn.graph.hetero_graph import HeteroGraph
from torchrec_gnn.modules.gnn import HeteroGNN
from torchrec_gnn.typing import EdgeType, NodeType


def chunk_edge_index(graph: HeteroGraph, edge_type: EdgeType, start: int, stop: int) -> torch.Tensor:
    """All edges of ``edge_type`` that end at destination nodes ``start .. stop - 1``.

    Args:
        graph (HeteroGraph): the graph.
        edge_type (EdgeType): the relation.
        start (int): first destination id of the chunk.
        stop (int): one past the last destination id.

    Returns:
        Tensor: (2, E_chunk) int64; row = global source id, col = destination id - ``start``.
    """
    index = graph.csc(edge_type)
    lo, hi = int(index.colptr[start]), int(index.colptr[stop])
    src = torch.from_numpy(np.asarray(index.row[lo:hi], dtype=np.int64))
    degree = torch.from_numpy(np.diff(np.asarray(index.colptr[start : stop + 1], dtype=np.int64)))
    dst = torch.repeat_interleave(torch.arange(stop - start), degree)
    return torch.stack([src, dst])


@torch.no_grad()
def full_graph_embeddings(
    gnn: HeteroGNN,
    x_dict: Mapping[NodeType, torch.Tensor],
    graph: HeteroGraph,
    chunk_size: int = 8192,
    progress: bool = True,
    num_layers: Optional[int] = None,
) -> Dict[NodeType, torch.Tensor]:
    """Run ``gnn`` over the whole ``graph`` layer by layer (eval mode: no dropout).

    Args:
        gnn (HeteroGNN): the trained GNN.
        x_dict (Mapping[str, Tensor]): (N_t, D) input features of every node of every type.
        graph (HeteroGraph): the graph (relations must include the GNN's).
        chunk_size (int): C, destination nodes per step (bounds the memory of one step to the
            edges of C nodes). Default 8192.
        progress (bool): show a progress bar over layers and chunks. Default True.
        num_layers (int, optional): run only the first ``num_layers`` layers (fewer than the
            GNN's: the last layer's input of every node, for its history). Default: all.

    Returns:
        Dict[str, Tensor]: (N_t, H) for every type of ``gnn.out_node_types``; with fewer
        ``num_layers`` than the GNN's, that layer's output for every node type.

    LightGCN's symmetric normalisation uses the graph's true degrees here (training counts them
    within each sampled subgraph), so the result does not depend on ``chunk_size``.
    """
    if chunk_size < 1:
        raise ValueError(f"full_graph_embeddings: chunk_size must be >= 1, got {chunk_size}")
    num_layers = gnn.num_layers if num_layers is None else num_layers
    if not 1 <= num_layers <= gnn.num_layers:
        raise ValueError(f"full_graph_embeddings: num_layers must be in [1, {gnn.num_layers}], got {num_layers}")
    partial = num_layers < gnn.num_layers
    missing = [et for et in gnn.edge_types if et not in set(graph.edge_types)]
    if missing:
        raise ValueError(f"full_graph_embeddings: the graph lacks the GNN's relations {missing}")
    was_training = gnn.training
    gnn.eval()
    x = dict(x_dict)
    device = next(iter(x.values())).device
    layer_outputs: Dict[NodeType, List[torch.Tensor]] = {t: [x[t]] for t in gnn.out_node_types}
    steps = [
        (layer, t, start)
        for layer in range(num_layers)
        for t in (gnn.out_node_types if layer == gnn.num_layers - 1 else gnn.node_types)
        for start in range(0, graph.num_nodes[t], chunk_size)
    ]
    # A chunk holds every edge of its destinations but not every edge of their sources: LightGCN
    # needs the sources' full out-degrees (counted once, in the features' dtype).
    src_degree = None
    if gnn.config.conv == "lightgcn":
        dtype = next(iter(x.values())).dtype
        src_degree = {
            et: torch.from_numpy(np.bincount(np.asarray(graph.csc(et).row), minlength=graph.num_nodes[et[0]])).to(device, dtype)
            for et in gnn.edge_types
        }
    bar = tqdm(total=len(steps), desc="layer-wise inference", disable=not progress, dynamic_ncols=True)
    for layer in range(num_layers):
        receivers = gnn.out_node_types if layer == gnn.num_layers - 1 else gnn.node_types
        relations = list(gnn.convs[layer].convs.keys())
        out: Dict[NodeType, torch.Tensor] = {}
        for t in receivers:
            rows = []
            for start in range(0, graph.num_nodes[t], chunk_size):
                stop = min(start + chunk_size, graph.num_nodes[t])
                edges = {et: chunk_edge_index(graph, et, start, stop).to(device) for et in relations if et[2] == t}
                rows.append(gnn.layer_forward(layer, x, edges, {t: x[t][start:stop]}, src_degree)[t])
                bar.update(1)
            out[t] = torch.cat(rows)
        x = out
        for t in layer_outputs:
            layer_outputs[t].append(x[t])
    bar.close()
    gnn.train(was_training)
    if partial:
        return x
    if gnn.config.conv == "lightgcn":
        return gnn.lightgcn_readout(layer_outputs)
    return {t: x[t] for t in gnn.out_node_types}

