"""`export`: the serving form of a finished run scores exactly as the run does with every
neighbour (the parity the sampled model can only approach), for an end-to-end and a
two-stage run, and never leaves a half-written export."""

from pathlib import Path

import pytest
import torch

from torchrec_gnn.cli import main as cli
from torchrec_gnn.recipes.evaluate import load_run
from torchrec_gnn.recipes.export import EMBEDDINGS_FILE, PROGRAM_FILE, serving_inputs
from torchrec_gnn.recipes.train import main as train
from torchrec_gnn.train.run_dir import RunDirectoryError

RUN_ARGS = [
    "--set", "data.preset=tiny", "--set", "loader.batch_size=256", "--set", "loader.eval_batch_size=128",
    "--set", "loader.num_workers=0", "--set", "train.plots=false", "--set", "model.node_embedding_dim=16",
    "--set", "model.gnn.hidden_channels=16", "--set", "pretrain.batch_size=256", "--set", "pretrain.max_steps=3",
    "--max-steps", "3",
]


@pytest.mark.timeout(600)
@pytest.mark.parametrize("config", ["configs/default.yaml", "configs/ablations/two_stage.yaml"])
def test_exported_ranker_matches_the_run_with_every_neighbour(tmp_path: Path, config: str) -> None:
    run_dir = tmp_path / "run"
    train(["--config", config, *RUN_ARGS, "--output-dir", str(run_dir)])
    cli(["export", "--run-dir", str(run_dir)])
    export = run_dir / "export"
    assert sorted(p.name for p in export.iterdir()) == sorted([EMBEDDINGS_FILE, PROGRAM_FILE, "export.json"])

    # The run itself, scoring the test split with full neighbourhoods instead of a sample.
    run = load_run(run_dir, ["loader.eval_fanouts=[-1,-1]"])
    examples = run.split.test
    expected = run.score(examples, desc="full neighbourhoods").outputs
    program = torch.export.load(export / PROGRAM_FILE).module()
    embeddings = torch.load(export / EMBEDDINGS_FILE)
    from torchrec_gnn.models.serving import ServingRanker
    inputs = serving_inputs(examples, ServingRanker(run.model.model), embeddings, run.dataset.user_type,
                            run.dataset.item_type)
    with torch.no_grad():
        served = program(*inputs)
    assert served.shape == expected.shape == (len(examples), len(run.dataset.tasks))
    torch.testing.assert_close(served, expected, rtol=0, atol=1e-5)
    # A sampled neighbourhood is not the whole one: the parity above is not trivially met.
    # configs/default.yaml scores with every neighbour (loader.eval_fanouts), so its run's own
    # scores are the served ones.
    sampled = load_run(run_dir, ["loader.eval_fanouts=null"]).score(examples, desc="sampled").outputs
    if config == "configs/default.yaml":
        assert (sampled - expected).abs().max() > 1e-4
        torch.testing.assert_close(load_run(run_dir).score(examples, desc="as configured").outputs, expected, rtol=0, atol=0)

    # An export is never overwritten by accident, and --overwrite gives the same program.
    with pytest.raises(RunDirectoryError, match="already exists; --overwrite replaces it"):
        cli(["export", "--run-dir", str(run_dir), "--debug"])
    cli(["export", "--run-dir", str(run_dir), "--overwrite"])
    again = torch.export.load(export / PROGRAM_FILE).module()
    with torch.no_grad():
        torch.testing.assert_close(again(*inputs), served, rtol=0, atol=0)
    assert not any(p.name.endswith(".tmp") for p in run_dir.iterdir())
