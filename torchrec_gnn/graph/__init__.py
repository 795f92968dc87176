"""Graph storage and sampling: HeteroGraph (CSC per relation) and NeighborSampler."""
