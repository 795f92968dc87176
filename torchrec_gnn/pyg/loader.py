"""Drop-in ``NeighborLoader`` and ``LinkNeighborLoader``: PyG's loaders, the project's sampler.

Same arguments, same ``Data`` / ``HeteroData`` batches as ``torch_geometric.loader``; they are
subclasses of PyG's loaders and only replace the sampler (pyg-lib or torch-sparse) with
:class:`~torchrec_gnn.pyg.sampler.PyGNeighborSampler`. A PyG script changes one import::

    from torchrec_gnn.pyg import LinkNeighborLoader  # was: from torch_geometric.loader import ...

Differences a user can see are listed in :mod:`torchrec_gnn.pyg.sampler` (none for the
semantics PyG documents; the random draws differ). Not supported, and named in the error:
``data`` as a ``(FeatureStore, GraphStore)`` pair, a ``neighbor_sampler`` that is not a
:class:`PyGNeighborSampler`, and ``is_sorted`` / ``share_memory`` have no effect (the graph is
always indexed, and worker processes receive it by pickling).
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Union

from torch import Tensor
from torch_geometric import loader as pyg_loader
from torch_geometric.data import Data, HeteroData
from torch_geometric.sampler import NegativeSampling, NumNeighbors
from torch_geometric.sampler.base import SubgraphType
from torch_geometric.typing import InputEdges, InputNodes

from torchrec_gnn.pyg.sampler import PyGNeighborSampler
from torchrec_gnn.typing import EdgeType

NumNeighborsArg = Union[List[int], Dict[EdgeType, List[int]], NumNeighbors]


def _sampler(
    data: Union[Data, HeteroData],
    num_neighbors: NumNeighborsArg,
    neighbor_sampler: Optional[PyGNeighborSampler],
    directed: bool,
    **options: Any,
) -> PyGNeighborSampler:
    if neighbor_sampler is not None:
        if not isinstance(neighbor_sampler, PyGNeighborSampler):
            raise TypeError(f"torchrec_gnn.pyg: neighbor_sampler must be a PyGNeighborSampler, got "
                            f"{type(neighbor_sampler).__name__}")
        return neighbor_sampler
    if not directed:  # PyG's deprecated spelling of an induced subgraph
        options["subgraph_type"] = SubgraphType.induced
    return PyGNeighborSampler.from_data(data, num_neighbors, **options)


class NeighborLoader(pyg_loader.NeighborLoader):
    """PyG's ``NeighborLoader`` (same arguments, same batches) sampling with the project's
    numba sampler.

    Args:
        data (Data or HeteroData): the graph and its features.
        num_neighbors (List[int], Dict[EdgeType, List[int]] or NumNeighbors): fanout per hop
            (``-1`` all neighbours), per relation in a dict or with a default in ``NumNeighbors``.
        input_nodes, input_time, transform, transform_sampler_output, filter_per_worker,
            is_sorted, **kwargs: as in ``torch_geometric.loader.NeighborLoader`` (``batch_size``,
            ``shuffle``, ``num_workers``, ... go to the ``DataLoader``).
        replace, disjoint, temporal_strategy, time_attr, weight_attr: as in PyG; a ``time_attr``
            of nodes or edges makes sampling temporal (and disjoint) with PyG's rule, neighbours
            at or before the seed time.
        subgraph_type (str): ``"directional"``, ``"bidirectional"`` or ``"induced"``.
        neighbor_sampler (PyGNeighborSampler, optional): a prebuilt sampler to share.
        directed (bool): PyG's deprecated ``False`` = ``subgraph_type="induced"``.

    Example::

        loader = NeighborLoader(data, num_neighbors=[10, 5], input_nodes=("paper", train_idx),
                                batch_size=1024, shuffle=True, num_workers=2)
        batch = next(iter(loader))  # HeteroData; batch["paper"].x[:batch["paper"].batch_size]
    """

    def __init__(
        self,
        data: Union[Data, HeteroData],
        num_neighbors: NumNeighborsArg,
        input_nodes: InputNodes = None,
        input_time: Optional[Tensor] = None,
        replace: bool = False,
        subgraph_type: Union[SubgraphType, str] = "directional",
        disjoint: bool = False,
        temporal_strategy: str = "uniform",
        time_attr: Optional[str] = None,
        weight_attr: Optional[str] = None,
        transform: Optional[Callable] = None,
        transform_sampler_output: Optional[Callable] = None,
        is_sorted: bool = False,
        filter_per_worker: Optional[bool] = None,
        neighbor_sampler: Optional[PyGNeighborSampler] = None,
        directed: bool = True,
        **kwargs: Any,
    ) -> None:
        sampler = _sampler(data, num_neighbors, neighbor_sampler, directed, subgraph_type=subgraph_type,
                           replace=replace, disjoint=disjoint, temporal_strategy=temporal_strategy,
                           time_attr=time_attr, weight_attr=weight_attr)
        super().__init__(
            data, num_neighbors, input_nodes=input_nodes, input_time=input_time, time_attr=time_attr,
            transform=transform, transform_sampler_output=transform_sampler_output, is_sorted=is_sorted,
            filter_per_worker=filter_per_worker, neighbor_sampler=sampler, **kwargs,
        )


class LinkNeighborLoader(pyg_loader.LinkNeighborLoader):
    """PyG's ``LinkNeighborLoader`` (same arguments, same batches: ``edge_label_index`` and
    ``edge_label`` in binary mode, ``src_index`` / ``dst_pos_index`` / ``dst_neg_index`` in
    triplet mode) sampling with the project's numba sampler.

    Args:
        data (Data or HeteroData): the graph and its features.
        num_neighbors (List[int], Dict[EdgeType, List[int]] or NumNeighbors): fanout per hop.
        edge_label_index, edge_label, edge_label_time, neg_sampling, neg_sampling_ratio,
            transform, transform_sampler_output, filter_per_worker, is_sorted, **kwargs: as in
            ``torch_geometric.loader.LinkNeighborLoader``; ``edge_label_time`` (with
            ``time_attr``) samples each link's own disjoint subgraph from edges at or before it.
        replace, disjoint, temporal_strategy, time_attr, weight_attr, subgraph_type,
            neighbor_sampler, directed: as in :class:`NeighborLoader`.

    Example::

        loader = LinkNeighborLoader(data, num_neighbors=[10, 5], edge_label_index=train_edges,
                                    neg_sampling=NegativeSampling("binary", amount=1),
                                    batch_size=1024, shuffle=True)
    """

    def __init__(
        self,
        data: Union[Data, HeteroData],
        num_neighbors: NumNeighborsArg,
        edge_label_index: InputEdges = None,
        edge_label: Optional[Tensor] = None,
        edge_label_time: Optional[Tensor] = None,
        replace: bool = False,
        subgraph_type: Union[SubgraphType, str] = "directional",
        disjoint: bool = False,
        temporal_strategy: str = "uniform",
        neg_sampling: Optional[NegativeSampling] = None,
        neg_sampling_ratio: Optional[Union[int, float]] = None,
        time_attr: Optional[str] = None,
        weight_attr: Optional[str] = None,
        transform: Optional[Callable] = None,
        transform_sampler_output: Optional[Callable] = None,
        is_sorted: bool = False,
        filter_per_worker: Optional[bool] = None,
        neighbor_sampler: Optional[PyGNeighborSampler] = None,
        directed: bool = True,
        **kwargs: Any,
    ) -> None:
        sampler = _sampler(data, num_neighbors, neighbor_sampler, directed, subgraph_type=subgraph_type,
                           replace=replace, disjoint=disjoint, temporal_strategy=temporal_strategy,
                           time_attr=time_attr, weight_attr=weight_attr)
        super().__init__(
            data, num_neighbors, edge_label_index=edge_label_index, edge_label=edge_label,
            edge_label_time=edge_label_time, neg_sampling=neg_sampling, neg_sampling_ratio=neg_sampling_ratio,
            time_attr=time_attr, transform=transform, transform_sampler_output=transform_sampler_output,
            is_sorted=is_sorted, filter_per_worker=filter_per_worker, neighbor_sampler=sampler, **kwargs,
        )
