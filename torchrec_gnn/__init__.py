"""torchrec_gnn: end-to-end GNN towers for TorchRec rankers."""
