"""Training: loss balancing (GradNorm), train pipeline, sharding, checkpoints and metrics."""
