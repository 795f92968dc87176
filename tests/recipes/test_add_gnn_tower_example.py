"""examples/add_gnn_tower.py: the tower added to each stock TorchRec model trains, in one process
and on 2 gloo ranks; the generic route (DeepFM) feeds the tower to both fusion levels and
shards the user's tables and the node tables through one planner."""

import importlib.util
import math
import os
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Dict, List

import pytest
import torch
import torch.distributed as dist
from torchrec.distributed.test_utils.multi_process import MultiProcessContext, MultiProcessTestBase
from torchrec.optim.optimizers import in_backward_optimizer_filter

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "add_gnn_tower.py"


def load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("add_gnn_tower", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def step_losses(stdout: str) -> List[List[float]]:
    """The per-loss values of every 'step N: total=... | name=value, ...' line."""
    lines = re.findall(r"^step \d+: total=\S+ \| (.*)$", stdout, flags=re.MULTILINE)
    return [[float(part.split("=")[1]) for part in line.split(", ")] for line in lines]


def tiny_setup(example: ModuleType, kind: str, rank: int = 0, world_size: int = 1):
    """The example's model of ``kind`` with the tower, sharded on the CPU, and its tiny data."""
    from torchrec_gnn.data.split import time_split
    from torchrec_gnn.data.synthetic import SyntheticConfig, make_synthetic
    from torchrec_gnn.train.distributed import DistributedContext
    from torchrec_gnn.train.sharding import ShardingConfig, shard_model

    dataset = make_synthetic(SyntheticConfig.preset("tiny"))
    split = time_split(dataset)
    torch.manual_seed(0)
    model = example.build_model(kind, dataset, split.graph, use_tower=True)
    dmp, plan = shard_model(model, torch.device("cpu"), ShardingConfig())
    ctx = DistributedContext(rank=rank, world_size=world_size, local_rank=rank, device=torch.device("cpu"), backend="gloo")
    data = example.batches(split.train, dataset, split.graph, 64, True, ctx, seed=0)
    return dataset, model, dmp, plan, data


def _deepfm_fusion_levels(rank: int, world_size: int) -> None:
    with MultiProcessContext(rank, world_size, "gloo"):
        _check_deepfm_fusion_levels()


def _check_deepfm_fusion_levels() -> None:
    from torchrec_gnn.train.balancing import FixedWeights
    from torchrec_gnn.train.pipeline import BalancedTrainPipeline
    from torchrec_gnn.train.sharding import make_optimizer, unwrap

    dataset, model, dmp, plan, data = tiny_setup(load_example(), "deepfm")
    # One planner placed both the user's tables and the node tables.
    assert set(plan.plan) == {"model.sparse_arch.embedding_bag_collection", "model.graph_tower.node_embeddings"}
    features = list(dataset.sparse_cardinality)
    assert set(plan.plan["model.sparse_arch.embedding_bag_collection"]) == {f"t_{f}" for f in features}
    assert set(plan.plan["model.graph_tower.node_embeddings"]) == {f"node_{t}" for t in dataset.num_nodes}
    deepfm = unwrap(dmp).model
    seen: Dict[str, object] = {}
    hooks = [
        deepfm.graph_tower.register_forward_hook(lambda m, args, out: seen.update(graph=out)),
        deepfm.inter_arch.register_forward_pre_hook(lambda m, args: seen.update(interaction=args[1])),
        deepfm.prehead_fusion.register_forward_pre_hook(lambda m, args: seen.update(prehead=args[1:])),
    ]
    batch = data[0]
    dmp(batch)
    for hook in hooks:
        hook.remove()
    graph, interaction = seen["graph"], seen["interaction"]
    # Input level: the FM and deep interaction read the (projected) graph embeddings as two more features.
    assert interaction.keys() == features + ["graph_user", "graph_item"]
    projected = deepfm.input_fusion(graph.user, graph.item)
    assert torch.equal(interaction["graph_user"], projected[:, 0]) and torch.equal(interaction["graph_item"], projected[:, 1])
    # Pre-head level: the same embeddings sit next to the interaction's output.
    assert torch.equal(seen["prehead"][0], graph.user) and torch.equal(seen["prehead"][1], graph.item)

    pipeline = BalancedTrainPipeline(dmp, make_optimizer(dmp, dense_lr=1e-2), FixedWeights(len(model.loss_names)),
                                     torch.device("cpu"))
    batches = [data[i % 4] for i in range(24)]  # 6 passes over 4 batches
    iterator = iter(batches)
    totals = [float(pipeline.progress(iterator).losses.sum()) for _ in batches]
    assert all(math.isfinite(t) for t in totals)
    assert sum(totals[-4:]) < 0.9 * sum(totals[:4]), totals


def _deepfm_on_two_ranks(rank: int, world_size: int) -> None:
    from torchrec_gnn.train.balancing import GradNorm
    from torchrec_gnn.train.pipeline import BalancedTrainPipeline
    from torchrec_gnn.train.sharding import make_optimizer

    torch.set_num_threads(1)
    with MultiProcessContext(rank, world_size, "gloo"):
        _, model, dmp, _, data = tiny_setup(load_example(), "deepfm", rank, world_size)
        pipeline = BalancedTrainPipeline(dmp, make_optimizer(dmp, dense_lr=1e-2), GradNorm(len(model.loss_names)),
                                         torch.device("cpu"))
        iterator = iter([data[i] for i in range(4)])  # each rank its own examples
        losses = torch.stack([pipeline.progress(iterator).losses for _ in range(4)])
        gathered = [torch.empty_like(losses) for _ in range(world_size)]
        dist.all_gather(gathered, losses)
        dense = dict(in_backward_optimizer_filter(dmp.named_parameters()))
        differing = []
        for name, p in dense.items():
            replicas = [torch.empty_like(p) for _ in range(world_size)]
            dist.all_gather(replicas, p.detach().contiguous())
            if not torch.equal(replicas[0], replicas[1]):
                differing.append(name)
        assert bool(torch.isfinite(losses).all()), losses
        assert not torch.equal(gathered[0], gathered[1]), "both ranks saw the same data"
        assert any(n.startswith("model.inter_arch") for n in dense) and any(n.startswith("model.graph_tower") for n in dense)
        assert not differing, f"dense replicas out of sync: {differing[:5]}"


class DeepFMExampleTest(MultiProcessTestBase):
    @pytest.mark.timeout(300)
    def test_deepfm_feeds_the_tower_to_both_fusion_levels_and_trains(self) -> None:
        self._run_multi_process_test(callable=_deepfm_fusion_levels, world_size=1)

    @pytest.mark.timeout(300)
    def test_two_ranks_keep_dense_replicas_equal(self) -> None:
        self._run_multi_process_test(callable=_deepfm_on_two_ranks, world_size=2)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("model, tower", [("dcn", True), ("deepfm", False)])  # projection: from_dlrm's unit tests
def test_example_trains_and_scores(model: str, tower: bool, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    import json
    import warnings

    # In this process (the command line is the torchrun test's).
    out = tmp_path / "metrics.json"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load_example().main(model, tower, "tiny", epochs=1, steps=3, batch_size=256, seed=0, json_path=str(out))
    stdout = capsys.readouterr().out
    losses = step_losses(stdout)
    assert len(losses) == 3 and all(len(step) == 5 and all(math.isfinite(v) and v > 0 for v in step) for step in losses)
    assert not [str(w.message) for w in caught] and "gfae" not in stdout  # no tower loss without a GFAE
    title = f"{model} {'with' if tower else 'without'} the GNN tower, 3 steps"
    assert f"{title}: val" in stdout and f"{title}: test" in stdout
    result = json.loads(out.read_text())
    assert (result["model"], result["tower"], result["steps"]) == (model, tower, 3)
    for split in ("val", "test"):
        assert 0.0 < result["metrics"][split]["click"]["auc"] < 1.0 and result["metrics"][split]["click"]["count"] > 100


@pytest.mark.multiprocess
@pytest.mark.timeout(300)
def test_example_under_torchrun_two_ranks() -> None:
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           str(EXAMPLE), "--steps", "3", "--model", "deepfm"],
                          capture_output=True, text=True, timeout=280, cwd=REPO,
                          env={**os.environ, "PYTHONFAULTHANDLER": "1"})  # a rank that aborts prints its threads
    assert proc.returncode == 0, f"stdout:\n{proc.stdout[-1500:]}\nstderr:\n{proc.stderr[-3000:]}"
    losses = step_losses(proc.stdout)
    assert len(losses) == 3  # rank 0 prints, once per step
    assert all(math.isfinite(v) for step in losses for v in step)
    assert proc.stdout.count("deepfm with the GNN tower, 3 steps: test") == 1  # scored once, printed by rank 0
