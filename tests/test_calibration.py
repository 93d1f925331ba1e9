"""Temperature scaling folded into the classifier, and the referable-DR operating points saved
with the model and used by `dr-hf predict`."""

import csv
import json

import numpy as np
import pytest
import torch
from scipy.special import softmax

from dr_hf.cli import predict_main
from dr_hf.config.arguments import ModelArguments
from dr_hf.config.parsing import config_from_dict
from dr_hf.inference import decision_rule, load_grader, predict
from dr_hf.metrics import expected_calibration_error
from dr_hf.models.graders import create_model
from dr_hf.models.parts import operating_points
from dr_hf.training.calibration import fit_temperature, fold_temperature
from dr_hf.training.run import run_training


def test_fit_temperature_recovers_the_temperature_that_made_the_labels():
    rng = np.random.default_rng(0)
    logits = rng.normal(scale=3.0, size=(4000, 5))
    labels = np.array([rng.choice(5, p=p) for p in softmax(logits / 2.5, axis=1)])
    assert fit_temperature(logits, labels) == pytest.approx(2.5, rel=0.08)
    overconfident = expected_calibration_error(softmax(logits, axis=1), labels)
    fitted = expected_calibration_error(
        softmax(logits / fit_temperature(logits, labels), axis=1), labels
    )
    assert fitted < overconfident / 3


@pytest.mark.parametrize("lora", [False, True])
def test_folding_divides_the_logits(lora):
    torch.manual_seed(0)
    model = create_model(ModelArguments(model_name="test_resnet", lora=lora), image_size=32)[
        0
    ].eval()
    pixels = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        before = model(pixel_values=pixels).logits
        fold_temperature(model, 1.7)
        after = model(pixel_values=pixels).logits
    torch.testing.assert_close(after, before / 1.7, rtol=1e-5, atol=1e-6)


def test_run_records_calibration_and_saves_operating_points(trained_run):
    output_dir = trained_run[0]
    results = json.loads((output_dir / "eval_results.json").read_text())
    calibration = results["calibration"]
    assert calibration["temperature"] > 0
    assert calibration["ece_after"] <= calibration["ece_before"] + 1e-9
    config = json.loads((output_dir / "best" / "config.json").read_text())
    assert config["dr_hf_operating_points"] == results["operating_points"]
    assert set(results["operating_points"]) == {"spec_90", "spec_95"}
    card = (output_dir / "best" / "README.md").read_text()
    assert f"{calibration['temperature']:.3f}" in card and "spec90" in card


def test_lora_adapter_keeps_its_operating_points(trained_lora_run):
    best = trained_lora_run[0] / "best"
    record = json.loads((best / "dr_hf_base.json").read_text())
    saved = json.loads((trained_lora_run[0] / "eval_results.json").read_text())
    assert record["dr_hf_operating_points"] == saved["operating_points"]
    assert operating_points(load_grader(best, device="cpu").model) == saved["operating_points"]


def test_without_calibration_the_probabilities_are_the_raw_softmax(synthetic_dir, tmp_path):
    from conftest import tiny_config

    values = tiny_config(synthetic_dir, tmp_path / "raw", num_train_epochs=1, calibrate=False)
    run_training(*config_from_dict(values))
    results = json.loads((tmp_path / "raw" / "eval_results.json").read_text())
    assert results["calibration"] is None
    # The exported weights are the best checkpoint's, untouched.
    from safetensors.torch import load_file

    exported = load_file(tmp_path / "raw" / "best" / "model.safetensors")
    checkpoint = load_file(f"{results['best_checkpoint']}/model.safetensors")
    for key in exported:
        torch.testing.assert_close(exported[key], checkpoint[key], rtol=0, atol=0)


def test_predict_refers_at_the_saved_point_and_says_so(trained_run, synthetic_dir, tmp_path):
    best = trained_run[0] / "best"
    points = operating_points(load_grader(best, device="cpu").model)
    photos = sorted((synthetic_dir / "train_images").glob("*.png"))[:20]
    output = tmp_path / "preds.csv"
    assert predict_main([*map(str, photos), "--model", str(best), "--output", str(output)]) == 0
    rows = list(csv.DictReader(open(output)))
    threshold = points["spec_90"]["threshold"]
    assert {row["operating_point"] for row in rows} == {"spec90"}
    for row in rows:
        assert float(row["referable_threshold"]) == pytest.approx(threshold, abs=1e-6)
        assert (row["referable"] == "True") == (float(row["referable_prob"]) >= threshold - 1e-6)
    spec95 = predict(best, photos, operating_point="spec95", device="cpu")
    assert spec95.referable_threshold == points["spec_95"]["threshold"]
    argmax = predict(best, photos, operating_point="argmax", device="cpu")
    assert argmax.referable_threshold is None
    assert (argmax.referable == (argmax.grades >= 2)).all()
    assert {row["operating_point"] for row in argmax.records()} == {"argmax"}


def test_a_model_without_saved_points_refers_on_the_grade_unless_asked(trained_run):
    grader = load_grader(trained_run[0] / "best", device="cpu")
    grader.model.config.dr_hf_operating_points = None
    assert decision_rule(grader) == ("argmax", None)
    assert decision_rule(grader, threshold=0.3) == ("threshold", 0.3)
    with pytest.raises(ValueError, match="no saved spec90 operating point"):
        decision_rule(grader, "spec90")


def test_a_model_that_learned_nothing_is_flagged(caplog):
    rng = np.random.default_rng(1)
    logits = rng.normal(scale=5.0, size=(500, 5))  # confident and unrelated to the labels
    labels = rng.integers(0, 5, 500)
    with caplog.at_level("WARNING", logger="dr_hf.training.calibration"):
        temperature = fit_temperature(logits, labels)
    assert temperature > 19 and "edge of its range" in caplog.text
