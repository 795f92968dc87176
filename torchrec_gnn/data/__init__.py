"""Datasets, time splits, GraphBatch and data loading."""
