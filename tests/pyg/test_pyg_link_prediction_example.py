"""examples/pyg_link_prediction.py: PyG's MovieLens tutorial runs on the project's loader and learns."""

import importlib.util
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DATA = REPO.parent / "shared" / "data" / "ml-100k-recbole"


@pytest.mark.skipif(not (DATA / "ml-100k.inter.gz").is_file(), reason="MovieLens-100K is not in ../shared/data")
@pytest.mark.timeout(300)
def test_link_prediction_example_learns_with_the_drop_in_loader(capsys: pytest.CaptureFixture) -> None:
    spec = importlib.util.spec_from_file_location("pyg_link_prediction", REPO / "examples" / "pyg_link_prediction.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    result = example.main(["--data", str(DATA), "--epochs", "1", "--limit-batches", "40"])
    assert "loader: torchrec_gnn.pyg.loader.LinkNeighborLoader" in capsys.readouterr().out
    # 40 batches of 128 links and 256 negatives, scored on 40 batches of held-out ratings: far above chance (0.5 +- 0.01 on 15k links).
    assert result["val_auc"] > 0.7 and result["test_auc"] > 0.7, result
