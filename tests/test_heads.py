"""Ordinal (CORN) and regression heads: their outputs, losses, calibration, training, saving,
reloading (with and without dr_hf) and cross-validation."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_config
from scipy.special import softmax
from transformers import AutoModelForImageClassification

from dr_hf.config.arguments import ModelArguments
from dr_hf.config.parsing import config_from_dict
from dr_hf.grading_rule import GRADE_RULE_KEY, GradeRule, continuous_scores, cut
from dr_hf.metrics import compute_dr_metrics
from dr_hf.models.base_record import write_base_record
from dr_hf.models.graders import create_model, load_trained_model
from dr_hf.models.ordered_heads import (
    OrderedTimmForImageClassification,
    corn_log_probs,
    corn_logits,
)
from dr_hf.predictions import read_predictions, rule_of
from dr_hf.training.calibration import calibrate, corn_array_log_probs, fit_temperature
from dr_hf.training.cv import CVArguments, run_cv
from dr_hf.training.losses import RegressionLoss, make_loss_fn
from dr_hf.training.run import run_training
from dr_hf.training.trainer import training_grades


def grader(head: str, name: str = "test_resnet", **kwargs):
    torch.manual_seed(0)
    return create_model(ModelArguments(model_name=name, head=head, **kwargs), image_size=32)


# ---- CORN --------------------------------------------------------------------------------------


def test_ordinal_probabilities_are_those_of_the_cumulative_probabilities():
    model = grader("ordinal")[0].eval()
    assert isinstance(model, OrderedTimmForImageClassification)
    assert model.accepts_loss_kwargs is False  # the Trainer keeps DDP's loss scaling right
    assert model.timm_model.get_classifier().out_features == 4
    pixels = torch.randn(6, 3, 32, 32)
    with torch.no_grad():
        model.timm_model.get_classifier().bias.copy_(torch.tensor([2.0, 0.5, -1.0, -3.0]))
        z = model.timm_model(pixels).double()
        probabilities = model(pixel_values=pixels).logits.double().softmax(-1)
    assert torch.all(probabilities >= 0)
    torch.testing.assert_close(probabilities.sum(-1), torch.ones(6, dtype=torch.float64))
    # P(y > k) = prod_{j <= k} sigmoid(z_j); P(y = k) = P(y > k-1) - P(y > k).
    above = torch.cumprod(torch.sigmoid(z), dim=-1)
    expected = -torch.diff(F.pad(above, (1, 0), value=1.0), dim=-1, append=torch.zeros(6, 1))
    torch.testing.assert_close(probabilities, expected, rtol=1e-5, atol=1e-6)
    # Rank-consistent: P(y > k) falls with k.
    assert torch.all(torch.diff(above, dim=-1) <= 0)


def test_corn_logits_invert_the_class_log_probabilities():
    z = torch.randn(50, 4, dtype=torch.float64) * 4
    torch.testing.assert_close(corn_logits(corn_log_probs(z)), z, rtol=1e-9, atol=1e-9)


def corn_task_loss(z: torch.Tensor, labels: torch.Tensor, weight=None) -> torch.Tensor:
    """The CORN loss written per binary task (Shi et al. 2021): task k sees the images with
    y > k-1 and predicts y > k; an image's loss is the sum of its tasks' binary cross-entropies."""
    per_image = torch.zeros(len(labels), dtype=z.dtype)
    for k in range(z.shape[1]):
        seen = labels >= k
        bce = F.binary_cross_entropy_with_logits(
            z[seen, k], (labels[seen] > k).to(z.dtype), reduction="none"
        )
        per_image[seen] += bce
    if weight is not None:
        per_image = per_image * weight[labels]
    return per_image.sum()


@pytest.mark.parametrize("weighted", [False, True])
def test_cross_entropy_on_corn_log_probabilities_is_the_corn_loss(weighted):
    torch.manual_seed(1)
    z = torch.randn(40, 4, dtype=torch.float64) * 2
    labels = torch.randint(0, 5, (40,))
    weight = torch.tensor([0.5, 1.0, 2.0, 3.0, 4.0], dtype=torch.float64) if weighted else None
    loss_fn = make_loss_fn("ce", weight=weight, head="ordinal")
    loss = loss_fn(corn_log_probs(z), labels, num_items_in_batch=40)
    expected = corn_task_loss(z, labels, weight) / 40
    torch.testing.assert_close(loss.double(), expected, rtol=1e-5, atol=1e-6)


def test_ordinal_temperature_is_recovered_and_folded():
    rng = np.random.default_rng(0)
    z = rng.normal(scale=3.0, size=(4000, 4))
    probabilities = np.exp(corn_array_log_probs(z / 2.0))
    labels = np.array([rng.choice(5, p=p / p.sum()) for p in probabilities])
    assert fit_temperature(z, labels, log_probs=corn_array_log_probs) == pytest.approx(
        2.0, rel=0.08
    )

    model = grader("ordinal")[0].eval()
    pixels = torch.randn(8, 3, 32, 32)
    with torch.no_grad():
        before = model(pixel_values=pixels).logits.double().numpy()
        calibrated, record = calibrate(model, before, np.arange(8) % 5, head="ordinal")
        after = model(pixel_values=pixels).logits.double().numpy()
    assert record["temperature"] > 0
    np.testing.assert_allclose(after, calibrated, atol=1e-5)
    z_before = corn_logits(torch.from_numpy(before)).numpy()
    np.testing.assert_allclose(
        corn_logits(torch.from_numpy(after)).numpy(), z_before / record["temperature"], atol=1e-4
    )


# ---- Regression loss and grades -------------------------------------------------------------


@pytest.mark.parametrize("kind", ["mse", "smooth_l1"])
def test_regression_loss_weights_each_image_by_its_grade(kind):
    scores = torch.tensor([[0.2], [1.5], [4.0], [0.9]])
    labels = torch.tensor([0, 2, 4, 3])
    weight = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0])
    errors = (scores[:, 0] - labels.float()).abs()
    if kind == "mse":
        per_image = errors**2
    else:
        per_image = torch.where(errors < 1, 0.5 * errors**2, errors - 0.5)
    loss_fn = make_loss_fn(head="regression", regression_loss=kind, weight=weight)
    summed = (weight[labels] * per_image).sum()
    torch.testing.assert_close(loss_fn(scores, labels, num_items_in_batch=10), summed / 10)
    torch.testing.assert_close(loss_fn(scores, labels), summed / weight[labels].sum())
    with pytest.raises(ValueError, match=r"one score per image"):
        RegressionLoss()(torch.zeros(4, 5), labels)


def test_training_accuracy_cuts_a_regression_score_at_the_default_cut_points():
    scores = torch.tensor([[-1.0], [0.5], [1.49], [2.6], [9.0]])
    assert training_grades(scores).tolist() == [0, 1, 1, 3, 4]
    assert training_grades(torch.eye(5)[[3, 1]]).tolist() == [3, 1]


# ---- Bad combinations ------------------------------------------------------------------------


def test_bad_head_combinations_are_clear_errors(synthetic_dir, tmp_path):
    with pytest.raises(ValueError, match="grade_rule=thresholds"):
        ModelArguments(head="regression", grade_rule="argmax")
    with pytest.raises(ValueError, match="head='coral'"):
        ModelArguments(head="coral")
    assert ModelArguments(head="regression").grade_rule == "thresholds"
    assert ModelArguments(head="ordinal").grade_rule == "thresholds"
    for overrides, message in [
        ({"loss": "focal"}, "regression_loss"),
        ({"label_smoothing_factor": 0.1}, "label_smoothing_factor"),
    ]:
        values = tiny_config(synthetic_dir, tmp_path / "bad", head="regression", **overrides)
        with pytest.raises(ValueError, match=message):
            run_training(*config_from_dict(values))
    assert not (tmp_path / "bad").exists()  # refused before anything was written
    with pytest.raises(ValueError, match="regression_loss='l1'"):
        config_from_dict(
            tiny_config(synthetic_dir, tmp_path / "bad", head="regression", regression_loss="l1")
        )


# ---- Whole runs ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def regression_run(synthetic_dir, tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("regression") / "out"
    values = tiny_config(synthetic_dir, output_dir, head="regression", num_train_epochs=2)
    run_training(*config_from_dict(values))
    return output_dir


@pytest.fixture(scope="module")
def ordinal_run(synthetic_dir, tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("ordinal") / "out"
    values = tiny_config(synthetic_dir, output_dir, head="ordinal", num_train_epochs=2)
    run_training(*config_from_dict(values))
    return output_dir


def test_regression_model_trains_saves_reloads_and_carries_its_cut_points(regression_run):
    best = regression_run / "best"
    config = json.loads((best / "config.json").read_text())
    assert config["dr_hf_head"] == "regression" and config["problem_type"] == "regression"
    saved = config[GRADE_RULE_KEY]
    assert saved["rule"] == "thresholds"
    cuts = saved["cut_points"]
    assert len(cuts) == 4 and all(a < b for a, b in zip(cuts, cuts[1:]))
    assert saved["qwk_fitted"] >= saved["qwk_default_cut_points"]

    model = load_trained_model(best).eval()
    assert isinstance(model, OrderedTimmForImageClassification)
    pixels = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        scores = model(pixel_values=pixels).logits
        # Plain transformers builds its own one-output wrapper: the same scores.
        plain = AutoModelForImageClassification.from_pretrained(best).eval()
        torch.testing.assert_close(plain(pixel_values=pixels).logits, scores)
    assert scores.shape == (3, 1)

    # The validation table and eval_results follow the saved rule.
    table = read_predictions(regression_run / "validation_predictions.csv", require_labels=True)
    rule = GradeRule.from_config(model.config)
    assert rule.cut_points == pytest.approx(tuple(cuts))
    score = table["score"].astype(float).to_numpy()
    stated = rule_of(table)  # the rule and cut points the rows state, as they state them
    assert stated.rule == "thresholds" and stated.cut_points == pytest.approx(cuts, abs=1e-6)
    assert table["grade"].astype(int).tolist() == cut(score, stated.cut_points).tolist()
    results = json.loads((regression_run / "eval_results.json").read_text())
    labels = table["true_grade"].astype(int).to_numpy()
    expected = compute_dr_metrics(score[:, None], labels, rule=stated)
    assert results["qwk"] == pytest.approx(expected["qwk"], abs=1e-6)
    assert results["referable_auroc"] == pytest.approx(expected["referable_auroc"], abs=1e-6)
    assert results["calibration"]["temperature"] is None and results["head"] == "regression"
    card = (best / "README.md").read_text()
    assert "How the grade is decided" in card and f"{round(cuts[0], 4)}" in card


def test_ordinal_folder_refuses_a_plain_load_and_loads_through_dr_hf(ordinal_run):
    best = ordinal_run / "best"
    with pytest.raises(RuntimeError, match="ignore_mismatched_sizes"):
        AutoModelForImageClassification.from_pretrained(best)
    model = load_trained_model(best).eval()
    assert isinstance(model, OrderedTimmForImageClassification)
    results = json.loads((ordinal_run / "eval_results.json").read_text())
    assert results["head"] == "ordinal" and results["grade_rule"]["rule"] == "thresholds"
    assert len(results["grade_rule"]["cut_points"]) == 4
    assert results["calibration"]["temperature"] > 0


PIPELINE_SCRIPT = """
import json, sys
sys.modules["dr_hf"] = None  # a machine without dr_hf
import numpy as np
from PIL import Image
from transformers import pipeline
image = Image.fromarray(np.load(sys.argv[2]))
grader = pipeline("image-classification", model=sys.argv[1], trust_remote_code=True)
print(json.dumps(grader(image, top_k=5)))
"""


@pytest.mark.slow
def test_pipeline_without_dr_hf_returns_the_ordinal_model_probabilities(ordinal_run, tmp_path):
    from dr_hf.data.fundus_processor import FundusImageProcessor
    from dr_hf.grades import GRADE_NAMES

    best = ordinal_run / "best"
    image = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    np.save(tmp_path / "image.npy", image)
    env = {**os.environ, "PYTHONPATH": ""}
    done = subprocess.run(
        [sys.executable, "-c", PIPELINE_SCRIPT, str(best), str(tmp_path / "image.npy")],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    scores = {row["label"]: row["score"] for row in json.loads(done.stdout.splitlines()[-1])}
    model = load_trained_model(best).eval()
    pixels = FundusImageProcessor.from_pretrained(best)(image, return_tensors="pt")
    with torch.no_grad():
        expected = softmax(model(**pixels).logits.double().numpy(), axis=1)[0]
    np.testing.assert_allclose([scores[name] for name in GRADE_NAMES], expected, atol=1e-5)


GRADING_SCRIPT = """
import json, sys
sys.modules["dr_hf"] = None  # a machine without dr_hf
from transformers import pipeline
grader = pipeline(model=sys.argv[1], trust_remote_code=True)  # the folder's dr-grading task
print(json.dumps([grader(photo) for photo in sys.argv[2:]]))
"""


@pytest.mark.slow
@pytest.mark.parametrize("head", ["ordinal", "regression"])
def test_the_grading_pipeline_without_dr_hf_answers_as_dr_hf_predict(
    head, request, synthetic_dir, tmp_path
):
    from dr_hf.grades import GRADE_NAMES
    from dr_hf.inference import predict

    best = request.getfixturevalue(f"{head}_run") / "best"
    photos = sorted((synthetic_dir / "train_images").glob("*.png"))[:8]
    done = subprocess.run(
        [sys.executable, "-c", GRADING_SCRIPT, str(best), *map(str, photos)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": ""},
        cwd=tmp_path,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    answers = json.loads(done.stdout.splitlines()[-1])
    ours = predict(best, photos, device="cpu", progress=False)
    assert [answer["grade"] for answer in answers] == ours.grades.tolist()
    assert {answer["rule"] for answer in answers} == {ours.grade_rule.rule}
    scores = [answer["score"] for answer in answers]
    np.testing.assert_allclose(scores, continuous_scores(ours.outputs), atol=1e-4)
    if head == "ordinal":
        shown = [[answer["probabilities"][name] for name in GRADE_NAMES] for answer in answers]
        np.testing.assert_allclose(shown, ours.probabilities, atol=1e-4)
    else:
        assert {answer["probabilities"] is None for answer in answers} == {True}


@pytest.mark.parametrize("head", ["ordinal", "regression"])
def test_lora_on_retfound_saves_and_reloads_with_identical_outputs(head, tmp_path):
    model = grader(head, "retfound_tiny", lora=True, lora_r=4)[0]
    with torch.no_grad():  # a trained head and adapter, not their initial values
        for parameter in model.parameters():
            if parameter.requires_grad:
                parameter.add_(torch.randn_like(parameter) * 0.05)
    model.eval()
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = model(pixel_values=pixels).logits
    assert expected.shape == (2, 5 if head == "ordinal" else 1)
    model.save_pretrained(str(tmp_path / "adapter"))
    write_base_record(model, tmp_path / "adapter")
    reloaded = load_trained_model(tmp_path / "adapter").eval()
    assert isinstance(reloaded.get_base_model(), OrderedTimmForImageClassification)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(pixel_values=pixels).logits, expected)


def test_cv_with_a_regression_head_fits_the_ensemble_cut_points(synthetic_dir, tmp_path):
    output_dir = tmp_path / "cv"
    values = tiny_config(synthetic_dir, output_dir, head="regression", num_train_epochs=1)
    summary = run_cv(*config_from_dict(values), CVArguments(folds=2))
    rule = summary["grade_rule"]
    assert rule["rule"] == "thresholds" and len(rule["cut_points"]) == 4
    tables = [
        read_predictions(output_dir / f"fold-{k}" / "validation_predictions.csv") for k in (0, 1)
    ]
    scores = np.concatenate([t["score"].astype(float).to_numpy() for t in tables])
    labels = np.concatenate([t["true_grade"].astype(int).to_numpy() for t in tables])
    assert len(scores) == 60
    expected = compute_dr_metrics(
        scores[:, None], labels, rule=GradeRule("thresholds", rule["cut_points"])
    )
    assert summary["out_of_fold"]["qwk"] == pytest.approx(expected["qwk"])
    assert rule["qwk_fitted"] == pytest.approx(expected["qwk"])
    assert continuous_scores(scores[:, None]).shape == (60,)
    assert json.loads((output_dir / "cv_summary.json").read_text())["grade_rule"] == rule
    assert "ensemble" in Path(output_dir / "cv_summary.md").read_text()


def test_a_regression_head_starts_at_the_mean_training_grade():
    model = create_model(
        ModelArguments(model_name="test_resnet", head="regression"), 32, mean_grade=1.3
    )[0]
    assert model.timm_model.get_classifier().bias.item() == pytest.approx(1.3)
    ordinal = create_model(
        ModelArguments(model_name="test_resnet", head="ordinal"), 32, mean_grade=1.3
    )[0]
    assert not torch.any(ordinal.timm_model.get_classifier().bias == 1.3)  # timm's init kept
