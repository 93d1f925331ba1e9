"""Ensembles: `dr-hf predict` / `dr-hf evaluate` with several models average their probabilities,
each member with its own preprocessing; one model stays exactly as without ensembles."""

import csv
import json
import shutil

import numpy as np
import pytest
import torch

from dr_hf.cli import evaluate_main, predict_main
from dr_hf.config.arguments import DataArguments
from dr_hf.evaluation.ensemble import MEMBER_METRICS
from dr_hf.evaluation.evaluate import evaluate_model
from dr_hf.evaluation.report import format_table
from dr_hf.inference import load_graders, predict

torch.set_num_threads(1)


@pytest.fixture
def members(trained_run, trained_lora_run):
    """best/ of the full run, its best checkpoint-N, and the LoRA adapter's best/ (RETFound tiny,
    another input size and normalisation)."""
    output_dir = trained_run[0]
    checkpoint = json.loads((output_dir / "eval_results.json").read_text())["best_checkpoint"]
    return [str(output_dir / "best"), str(checkpoint), str(trained_lora_run[0] / "best")]


@pytest.fixture
def photos(synthetic_dir, tmp_path):
    """Six synthetic photographs and one file that is no image."""
    folder = tmp_path / "photos"
    folder.mkdir()
    for path in sorted((synthetic_dir / "train_images").glob("*.png"))[:6]:
        shutil.copy(path, folder / path.name)
    (folder / "garbage.png").write_bytes(b"this is not a PNG")
    return folder


def test_ensemble_probabilities_are_the_mean_of_the_members(members, photos):
    alone = [predict(model, [photos], operating_point="argmax") for model in members]
    assert len({result.names[0] for result in alone}) == 1
    assert not np.allclose(alone[0].probabilities, alone[2].probabilities, atol=1e-3)

    result = predict(load_graders(members), [photos])
    assert result.names == alone[0].names and len(result.names) == 6
    mean = np.mean([single.probabilities for single in alone], axis=0)
    np.testing.assert_allclose(result.probabilities, mean, atol=1e-6)
    assert [name for name, _ in result.failures] == [str(photos / "garbage.png")]
    assert [v.issues for v in result.quality] == [v.issues for v in alone[0].quality]
    rows = result.records()
    graded = [row for row in rows if not row["error"]]  # the failure keeps its place in the rows
    assert len(graded) == len(rows) - 1
    assert {row["operating_point"] for row in graded} == {"ensemble_argmax"}
    assert [row["referable"] for row in graded] == [bool(g >= 2) for g in mean.argmax(1)]

    thresholded = predict(load_graders(members[:2]), [photos], referable_threshold=0.3)
    graded = [row for row in thresholded.records() if not row["error"]]
    assert {row["operating_point"] for row in graded} == {"ensemble_threshold"}
    with pytest.raises(ValueError, match="do not apply"):
        predict(load_graders(members[:2]), [photos], operating_point="spec90")


def test_predict_command_takes_several_models(members, photos, tmp_path, capsys):
    out = tmp_path / "preds.csv"
    two = ["--model", members[0], "--model", members[1]]
    code = predict_main([*two, str(photos), "--output", str(out)])
    assert code == 1  # the garbage file is reported, the rest graded
    rows = list(csv.DictReader(out.open()))
    assert {row["operating_point"] for row in rows if not row["error"]} == {"ensemble_argmax"}
    argv = ["--operating-point", "spec90", str(photos), *two]
    assert predict_main(argv) == 2
    assert "do not apply" in capsys.readouterr().err
    assert predict_main(["--heatmaps", str(tmp_path / "maps"), *argv[2:]]) == 2
    assert "one --model" in capsys.readouterr().err
    assert predict_main(two) == 2  # no images
    assert "IMAGE_OR_FOLDER" in capsys.readouterr().err


@pytest.mark.slow
def test_evaluate_reports_each_member_beside_the_ensemble(members, synthetic_dir, tmp_path):
    data = DataArguments(data_dir=str(synthetic_dir))
    alone = [
        evaluate_model(model, data, tmp_path / f"alone{i}", bootstrap=0)
        for i, model in enumerate(members)
    ]
    ensemble = evaluate_model(members, data, tmp_path / "ensemble", bootstrap=0)
    assert ensemble["model"] == members and len(ensemble["preprocessing"]) == 3
    assert [member["model"] for member in ensemble["members"]] == members
    for member, single in zip(ensemble["members"], alone):
        for name in MEMBER_METRICS:
            assert member[name] == pytest.approx(single[name], abs=1e-9), name

    def probabilities(folder):
        rows = list(csv.DictReader((folder / "predictions.csv").open()))
        return np.array([[float(row[f"prob_{g}"]) for g in range(5)] for row in rows])

    mean = np.mean([probabilities(tmp_path / f"alone{i}") for i in range(3)], axis=0)
    np.testing.assert_allclose(probabilities(tmp_path / "ensemble"), mean, atol=2e-6)
    saved = json.loads((tmp_path / "ensemble" / "metrics.json").read_text())
    assert saved["members"] == ensemble["members"]
    table = format_table(ensemble)
    assert "Ensemble members" in table and all(model in table for model in members)


@pytest.mark.slow
def test_one_model_gives_exactly_the_report_of_one_model(members, synthetic_dir, tmp_path):
    data = DataArguments(data_dir=str(synthetic_dir))
    plain = evaluate_model(members[0], data, tmp_path / "plain", bootstrap=20)
    listed = evaluate_model([members[0]], data, tmp_path / "listed", bootstrap=20)
    assert listed.keys() == plain.keys() and "members" not in listed
    assert listed == plain
    files = sorted(path.name for path in (tmp_path / "plain").iterdir())
    assert sorted(path.name for path in (tmp_path / "listed").iterdir()) == files
    assert "Ensemble members" not in format_table(listed)


@pytest.mark.slow
def test_evaluate_command_with_two_models(members, synthetic_dir, tmp_path, capsys):
    copies = [tmp_path / "run" / "best", tmp_path / "run" / "checkpoint"]
    for source, copy in zip(members, copies):
        shutil.copytree(source, copy)
    argv = ["--model", str(copies[0]), "--model", str(copies[1])]
    argv += ["--data", str(synthetic_dir), "--bootstrap", "0"]
    assert evaluate_main(argv) == 0
    out = capsys.readouterr().out
    folder = tmp_path / "run" / f"eval_ensemble_{synthetic_dir.name}"  # beside the first member
    report = json.loads((folder / "metrics.json").read_text())
    assert len(report["members"]) == 2 and "Ensemble members" in out and "ensemble of" in out
    assert str(folder) in out
    assert evaluate_main(argv + ["--heatmaps", "2", "--output", str(tmp_path / "h")]) == 2
    assert "one model" in capsys.readouterr().err
