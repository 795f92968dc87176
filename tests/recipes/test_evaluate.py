"""Scoring a finished run: `predict` on a table of rows gives exactly what `eval` gives on the
same rows, and bad tables fail with a message that names the file, column and value."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from torchrec_gnn.cli import main as cli
from torchrec_gnn.recipes.train import main as train

RUN_ARGS = [
    "--config", "configs/default.yaml", "--set", "data.preset=tiny", "--set", "loader.batch_size=256",
    "--set", "loader.eval_batch_size=128", "--set", "loader.num_workers=0", "--set", "train.plots=false",
    "--set", "model.node_embedding_dim=16", "--set", "model.gnn.hidden_channels=16", "--max-steps", "3",
]


@pytest.fixture(scope="module")
def scored_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished tiny run and its test split's predictions (``test.parquet`` beside it)."""
    root = tmp_path_factory.mktemp("predict")
    train([*RUN_ARGS, "--output-dir", str(root / "run")])
    cli(["eval", "--run-dir", str(root / "run"), "--split", "test", "--predictions", str(root / "test.parquet")])
    return root


@pytest.mark.timeout(600)
def test_predict_reproduces_eval_on_the_same_rows(scored_run: Path) -> None:
    expected = pd.read_parquet(scored_run / "test.parquet")
    # eval's table is predict's input layout: ids, time, features, labels (predictions are ignored).
    cli(["predict", "--run-dir", str(scored_run / "run"), "--input", str(scored_run / "test.parquet"),
         "--output", str(scored_run / "again.csv")])
    again = pd.read_csv(scored_run / "again.csv")
    assert list(again.columns) == list(expected.columns) and len(again) == len(expected) > 100
    pd.testing.assert_frame_equal(again, expected, check_dtype=False, rtol=1e-6)

    # Without labels (and with a column the run does not know): the same scores, every label missing.
    rows = expected.drop(columns=[c for c in expected.columns if c.endswith("_label")]).assign(note="x")
    rows.to_csv(scored_run / "rows.csv", index=False)
    cli(["predict", "--run-dir", str(scored_run / "run"), "--input", str(scored_run / "rows.csv"),
         "--output", str(scored_run / "unlabelled.parquet")])
    unlabelled = pd.read_parquet(scored_run / "unlabelled.parquet")
    for task in ("click", "like", "stay_duration"):
        np.testing.assert_allclose(unlabelled[task].to_numpy(), expected[task].to_numpy(), rtol=1e-6)
        assert unlabelled[f"{task}_label"].isna().all()


def _predict_error(scored_run: Path, frame: pd.DataFrame, name: str, capsys: pytest.CaptureFixture) -> str:
    """The CLI's message for `predict` on ``frame``; checks the clean-error contract (status 2,
    no traceback) and that the earlier output file is left as it was."""
    path = scored_run / name
    frame.to_csv(path, index=False)
    output = scored_run / "kept.csv"
    output.write_text("earlier result\n")
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        cli(["predict", "--run-dir", str(scored_run / "run"), "--input", str(path), "--output", str(output)])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "Traceback" not in err, err
    assert output.read_text() == "earlier result\n"
    return err


@pytest.mark.timeout(600)
def test_bad_rows_fail_naming_file_column_and_value(scored_run: Path, capsys: pytest.CaptureFixture) -> None:
    rows = pd.read_parquet(scored_run / "test.parquet").head(50)
    sparse = [c for c in rows.columns if c not in ("user", "item", "timestamp") and rows[c].dtype.kind == "i"][0]
    err = _predict_error(scored_run, rows.drop(columns=[sparse]), "missing.csv", capsys)
    assert "missing.csv: missing column(s) ['" + sparse + "']" in err
    err = _predict_error(scored_run, rows.assign(user=rows["user"].where(rows.index != 7, 10**6)), "range.csv", capsys)
    assert "range.csv: column 'user': id 1000000 at position 7 is outside [0, 400)" in err
    dense = rows.columns[3]
    err = _predict_error(scored_run, rows.assign(**{dense: rows[dense].where(rows.index != 3, np.nan)}), "empty.csv", capsys)
    assert f"empty.csv: column '{dense}' has 1 empty value(s), first at row 3" in err
    err = _predict_error(scored_run, rows.assign(click_label=2.0), "label.csv", capsys)
    assert "label.csv: column 'click_label': binary label must be 0, 1 or empty, found 2.0 at row 0" in err
    err = _predict_error(scored_run, rows.head(0), "none.csv", capsys)
    assert "none.csv: the table has no rows to score" in err
