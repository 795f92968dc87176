"""The probe behind README "Step cost" / "torch.compile of the GNN": the default tower's
training step with the GNN eager or under ``torch.compile(HeteroGNN.forward, dynamic=True)``,
in bench_step.py's setting (one process, 1 intra-op thread, 12 pre-built batches; 6 warm-up
steps, which compile, then 3 timed rounds). Run each mode in its own process, one after another:

    PYTHONPATH=. python docs/results/benchmarks/step_levers/compile_probe.py eager
    PYTHONPATH=. python docs/results/benchmarks/step_levers/compile_probe.py compile
"""

import json
import statistics
import sys
import time

import torch
import torch.distributed as dist

from benchmarks.bench_step import Bench
from torchrec_gnn.config import load_config
from torchrec_gnn.data.registry import load_dataset
from torchrec_gnn.data.split import time_split
from torchrec_gnn.models.builder import tower_node_features
from torchrec_gnn.modules.gnn import HeteroGNN
from torchrec_gnn.recipes.batches import batches as training_batches
from torchrec_gnn.train.distributed import init_distributed


def main(mode: str) -> None:
    torch.set_num_threads(1)
    init_distributed("cpu")
    config = load_config("configs/default.yaml", [])
    dataset = load_dataset(config.data)
    split = time_split(dataset, config.data.history_fraction, config.data.val_fraction, config.data.test_fraction)
    data = training_batches(config, split.graph, dataset, split.train, train=True)
    batches = [data[i] for i in range(12)]
    bench = Bench(dataset, split.graph, config, tower_node_features(dataset, split.graph, None))
    (gnn,) = [m for m in bench.dmp.modules() if isinstance(m, HeteroGNN)]
    if mode == "compile":
        gnn.forward = torch.compile(gnn.forward, dynamic=True)
    start = time.perf_counter()
    bench.steps_per_s(batches[:6])
    warmup_s = time.perf_counter() - start
    rates = [bench.steps_per_s(batches) for _ in range(3)]
    print(json.dumps({"mode": mode, "warmup_s": warmup_s, "ms_per_step": [1000 / r for r in rates],
                      "median_ms": 1000 / statistics.median(rates)}))
    dist.destroy_process_group()


if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1] not in ("eager", "compile"):
        sys.exit("usage: compile_probe.py eager|compile")
    main(sys.argv[1])
