"""Reusable nn.Modules: GNN tower, GFAE, fusion arches, task heads."""
