"""Grading metrics against scikit-learn, the evaluate module, and the Trainer hook."""

import json
import math

import evaluate
import numpy as np
import pytest
import torch
from sklearn.calibration import calibration_curve
from sklearn.metrics import (
    cohen_kappa_score,
    confusion_matrix,
    f1_score,
    recall_score,
    roc_auc_score,
)
from transformers import EvalPrediction

from dr_hf.metrics import (
    DR_GRADING_PATH,
    HEADLINE,
    bootstrap_ci,
    calibration_bins,
    compute_dr_metrics,
    expected_calibration_error,
    make_compute_metrics,
    quadratic_weighted_kappa,
    referable_scores,
    resampled_metrics,
    sensitivity_at_specificity,
    softmax,
)

GRADES = list(range(5))


def _random_set(n=200, seed=0, grades=GRADES):
    """Seeded probabilities that are better than chance, so every metric is non-trivial."""
    rng = np.random.default_rng(seed)
    labels = rng.choice(grades, size=n)
    logits = rng.normal(size=(n, 5))
    logits[np.arange(n), labels] += 1.5
    return softmax(logits), labels


def _ece_by_hand(probs, labels, n_bins=15):
    """Top-label ECE over the bins (i/n, (i+1)/n], written out bin by bin."""
    confidence, right = probs.max(axis=1), probs.argmax(axis=1) == labels
    total = 0.0
    for i in range(n_bins):
        lo, hi = i / n_bins, (i + 1) / n_bins
        inside = (confidence > lo) & (confidence <= hi) if i else (confidence <= hi)
        if inside.any():
            total += inside.sum() * abs(right[inside].mean() - confidence[inside].mean())
    return total / len(labels)


def _sklearn_metrics(probs, labels):
    pred = probs.argmax(axis=1)
    present = np.unique(labels)
    recall = recall_score(labels, pred, labels=GRADES, average=None, zero_division=np.nan)
    referable = labels >= 2
    return {
        "accuracy": np.mean(pred == labels),
        **{f"class_{g}_acc": recall[g] for g in GRADES},
        "qwk": cohen_kappa_score(labels, pred, weights="quadratic", labels=GRADES),
        "macro_f1": f1_score(labels, pred, average="macro"),
        "macro_auroc": np.mean([roc_auc_score(labels == g, probs[:, g]) for g in present])
        if len(present) > 1
        else np.nan,
        "referable_auroc": roc_auc_score(referable, probs[:, 2:].sum(axis=1))
        if 0 < referable.sum() < len(labels)
        else np.nan,
        "referable_sensitivity": np.mean(pred[referable] >= 2) if referable.any() else np.nan,
        "referable_specificity": np.mean(pred[~referable] < 2) if (~referable).any() else np.nan,
        "ece": _ece_by_hand(probs, labels),
        "confusion_matrix": confusion_matrix(labels, pred, labels=GRADES).tolist(),
    }


def _assert_matches(ours, reference):
    assert set(ours) - {"referable_operating_points"} == set(reference)
    for key, expected in reference.items():
        if key == "confusion_matrix":
            assert ours[key] == expected
        elif np.isnan(expected):
            assert math.isnan(ours[key]), key
        else:
            assert ours[key] == pytest.approx(expected, abs=1e-6), key
            assert isinstance(ours[key], float), key


@pytest.mark.parametrize("seed", [0, 1])
def test_random_set_matches_sklearn(seed):
    probs, labels = _random_set(seed=seed)
    ours = compute_dr_metrics(probs, labels)
    _assert_matches(ours, _sklearn_metrics(probs, labels))
    # all five grades present: our macro AUROC is sklearn's multi-class one
    assert ours["macro_auroc"] == pytest.approx(
        roc_auc_score(labels, probs, multi_class="ovr", average="macro"), abs=1e-6
    )
    assert 0.3 < ours["qwk"] < 1.0 and 0.5 < ours["macro_auroc"] < 1.0


def test_perfect_predictions():
    labels = np.array([0, 1, 2, 3, 4] * 4)
    probs = np.eye(5)[labels] * 0.95 + 0.01
    ours = compute_dr_metrics(probs, labels)
    _assert_matches(ours, _sklearn_metrics(probs, labels))
    for key in ("accuracy", "qwk", "macro_f1", "macro_auroc", "referable_auroc"):
        assert ours[key] == pytest.approx(1.0)
    assert ours["confusion_matrix"] == (np.eye(5, dtype=int) * 4).tolist()


def test_absent_grade_gives_nan_recall_only():
    probs, labels = _random_set(grades=[0, 1, 2, 4], seed=3)
    ours = compute_dr_metrics(probs, labels)
    _assert_matches(ours, _sklearn_metrics(probs, labels))
    assert math.isnan(ours["class_3_acc"])
    assert not any(
        math.isnan(v) for k, v in ours.items() if isinstance(v, float) and k != "class_3_acc"
    )


def test_single_grade_in_references():
    probs, _ = _random_set(n=30, seed=4)
    labels = np.zeros(30, dtype=int)
    ours = compute_dr_metrics(probs, labels)
    _assert_matches(ours, _sklearn_metrics(probs, labels))
    assert math.isnan(ours["macro_auroc"]) and math.isnan(ours["referable_auroc"])
    assert math.isnan(ours["referable_sensitivity"])
    assert ours["class_0_acc"] == ours["accuracy"]


def test_qwk_uses_the_grade_scale_not_the_labels_present():
    labels, pred = np.array([0, 0, 4, 4, 1, 1]), np.array([0, 1, 4, 1, 1, 4])
    ours = quadratic_weighted_kappa(labels, pred)
    assert ours == pytest.approx(
        cohen_kappa_score(labels, pred, weights="quadratic", labels=GRADES)
    )
    assert ours != pytest.approx(cohen_kappa_score(labels, pred, weights="quadratic"))


def test_evaluate_load_by_path_gives_the_headline_function():
    """What an `evaluate` user gets is compute_dr_metrics, batch by batch as evaluate feeds it
    (probabilities stored as float32)."""
    probs, labels = _random_set(n=50, seed=5)
    metric = evaluate.load(DR_GRADING_PATH)
    for start in range(0, 50, 20):
        metric.add_batch(
            predictions=probs[start : start + 20], references=labels[start : start + 20]
        )
    by_path = metric.compute()
    _assert_matches(by_path, _sklearn_metrics(probs, labels))
    direct = compute_dr_metrics(probs, labels)
    assert by_path.keys() == direct.keys()
    for name, point in direct["referable_operating_points"].items():
        assert by_path["referable_operating_points"][name] == pytest.approx(point, abs=1e-6)


@pytest.mark.parametrize(
    "probs, labels, message",
    [
        (np.full((3, 5), 0.2), [0, 1, 5], "labels\\[2\\] = 5"),
        (np.full((3, 4), 0.25), [0, 1, 2], "shape"),
        (np.ones((3, 5)), [0, 1, 2], "not logits"),
        (np.full((3, 5), 0.2), [0, 1], "labels must have shape"),
    ],
)
def test_bad_inputs_raise(probs, labels, message):
    with pytest.raises(ValueError, match=message):
        compute_dr_metrics(probs, np.array(labels))


def test_make_compute_metrics_on_logits():
    probs, labels = _random_set(seed=6)
    logits = np.log(probs) + 3.0  # any shift: softmax recovers probs
    metrics = make_compute_metrics()(EvalPrediction(predictions=logits, label_ids=labels))
    expected = _sklearn_metrics(probs, labels)
    expected.pop("confusion_matrix")
    _assert_matches(metrics, expected)
    as_tuple = make_compute_metrics()(
        EvalPrediction(predictions=(logits, logits), label_ids=labels)
    )
    assert as_tuple == metrics


class _TinyGrader(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(4, 5)

    def forward(self, x, labels=None):
        logits = self.linear(x)
        loss = torch.nn.functional.cross_entropy(logits, labels) if labels is not None else None
        return {"loss": loss, "logits": logits}


def test_trainer_logs_survive_nan_metrics(tmp_path):
    from datasets import Dataset
    from transformers import Trainer, TrainingArguments

    data = Dataset.from_dict(
        {"x": np.random.default_rng(0).normal(size=(12, 4)).tolist(), "labels": [0, 1, 2] * 4}
    ).with_format("torch")
    args = TrainingArguments(output_dir=str(tmp_path), report_to="none", use_cpu=True)
    trainer = Trainer(
        model=_TinyGrader(), args=args, eval_dataset=data, compute_metrics=make_compute_metrics()
    )
    metrics = trainer.evaluate()
    assert math.isnan(metrics["eval_class_4_acc"]) and 0.0 <= metrics["eval_class_0_acc"] <= 1.0
    assert "eval_confusion_matrix" not in metrics
    trainer.save_state()
    state = json.loads((tmp_path / "trainer_state.json").read_text())
    assert math.isnan(state["log_history"][-1]["eval_class_3_acc"])
    assert state["log_history"][-1]["eval_qwk"] == pytest.approx(metrics["eval_qwk"])


# Confidences 0.9 (one of two right) and 0.6 (both right).
TWO_CONFIDENCES = np.array(
    [
        [0.9, 0.025, 0.025, 0.025, 0.025],
        [0.9, 0.025, 0.025, 0.025, 0.025],
        [0.1, 0.6, 0.1, 0.1, 0.1],
        [0.1, 0.6, 0.1, 0.1, 0.1],
    ]
)
TWO_CONFIDENCE_LABELS = np.array([0, 3, 1, 1])


def test_expected_calibration_error_by_hand():
    # Confidences 0.9, 0.9 (bin (13/15, 14/15]: one right) and 0.6, 0.6 (bin (8/15, 9/15]: both right).
    probs, labels = TWO_CONFIDENCES, TWO_CONFIDENCE_LABELS
    # |0.5 - 0.9| * 2/4 + |1.0 - 0.6| * 2/4
    assert expected_calibration_error(probs, labels) == pytest.approx(0.4)
    # one bin: |accuracy 3/4 - mean confidence 0.75| = 0
    assert expected_calibration_error(probs, labels, n_bins=1) == pytest.approx(0.0)
    perfect = np.eye(5)[[0, 1, 2]]
    assert expected_calibration_error(perfect, np.array([0, 1, 2])) == pytest.approx(0.0)


def test_calibration_bins_by_hand_and_the_plot_shows_them():
    from dr_hf.evaluation.plots import reliability_figure

    probs, labels = TWO_CONFIDENCES, TWO_CONFIDENCE_LABELS
    count, accuracy, confidence = calibration_bins(probs, labels, n_bins=10)
    assert count.tolist() == [0, 0, 0, 0, 0, 2, 0, 0, 2, 0]  # 0.6 in (0.5, 0.6], 0.9 in (0.8, 0.9]
    assert accuracy[[5, 8]].tolist() == [1.0, 0.5] and np.isnan(accuracy[0])
    assert confidence[[5, 8]] == pytest.approx([0.6, 0.9]) and np.isnan(confidence[9])
    with pytest.raises(ValueError, match="n_bins"):
        calibration_bins(probs, labels, n_bins=0)

    rng_probs, rng_labels = _random_set(n=500, seed=3)
    count, accuracy, confidence = calibration_bins(rng_probs, rng_labels)
    filled = count > 0
    by_bins = (count[filled] * np.abs(accuracy[filled] - confidence[filled])).sum() / 500
    assert expected_calibration_error(rng_probs, rng_labels) == pytest.approx(by_bins)
    # The bins are scikit-learn's calibration_curve's, on the filled bins.
    right = rng_probs.argmax(axis=1) == rng_labels
    curve = calibration_curve(right, rng_probs.max(axis=1), n_bins=15)
    assert curve[0] == pytest.approx(accuracy[filled]) and curve[1] == pytest.approx(
        confidence[filled]
    )
    # The figure draws the same bins, and shows the ECE it is given rather than its own.
    figure = reliability_figure(rng_probs, rng_labels, ece=0.123)
    top, bottom = figure.axes
    (curve_line,) = [line for line in top.get_lines() if line.get_label() == "Grader"]
    assert curve_line.get_xdata() == pytest.approx(confidence[filled])
    assert curve_line.get_ydata() == pytest.approx(accuracy[filled])
    assert [bar.get_height() for bar in bottom.patches] == count.tolist()
    assert "ECE 0.123" in top.get_title()
    ece = expected_calibration_error(rng_probs, rng_labels)
    assert f"ECE {ece:.3f}" in reliability_figure(rng_probs, rng_labels).axes[0].get_title()


def test_sensitivity_at_specificity():
    scores = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.35, 0.6, 0.7, 0.8, 0.9])
    y = np.array([0, 0, 0, 0, 0, 1, 1, 1, 1, 1])
    # Threshold 0.35: specificity 3/5, sensitivity 1; at 0.6: specificity 1, sensitivity 4/5.
    assert sensitivity_at_specificity(scores, y, 0.9) == pytest.approx((0.8, 0.6))
    assert sensitivity_at_specificity(scores, y, 0.6) == pytest.approx((1.0, 0.35))
    sens, threshold = sensitivity_at_specificity(scores, y, 0.8)
    predicted = scores >= threshold
    assert np.mean(~predicted[y == 0]) >= 0.8 and np.mean(predicted[y == 1]) == sens == 0.8
    assert all(math.isnan(v) for v in sensitivity_at_specificity(scores, np.zeros(10), 0.9))
    with pytest.raises(ValueError, match="specificity"):
        sensitivity_at_specificity(scores, y, 90)


def test_sensitivity_at_specificity_on_referable_scores():
    probs, labels = _random_set(n=300, seed=7)
    scores, referable = referable_scores(probs), labels >= 2
    sens90, t90 = sensitivity_at_specificity(scores, referable, 0.90)
    sens95, t95 = sensitivity_at_specificity(scores, referable, 0.95)
    assert np.mean(scores[~referable] < t95) >= 0.95 and np.mean(scores[~referable] < t90) >= 0.90
    assert sens95 <= sens90 and t95 >= t90
    assert sens90 == pytest.approx(np.mean(scores[referable] >= t90))


def test_bootstrap_ci_contains_estimate_and_narrows():
    probs, labels = _random_set(n=1000, seed=8)
    point = compute_dr_metrics(probs, labels)
    widths = {}
    for name in ("qwk", "macro_auroc"):
        lo, hi = bootstrap_ci(name, probs, labels, n=1000, seed=0)
        assert lo < point[name] < hi
        widths[name] = hi - lo
    small = bootstrap_ci("qwk", probs[:100], labels[:100], n=300)
    assert small.hi - small.lo > 2 * widths["qwk"]
    again = bootstrap_ci("qwk", probs[:100], labels[:100], n=300)
    assert tuple(again) == tuple(small) and small.n_skipped == 0


def test_bootstrap_ci_counts_undefined_resamples():
    labels = np.array([0] * 9 + [3])
    probs = softmax(np.random.default_rng(0).normal(size=(10, 5)))
    ci = bootstrap_ci("referable_auroc", probs, labels, n=200)
    # a resample misses the single referable image with probability 0.9**10 ~ 0.35
    assert 30 < ci.n_skipped < 120 and ci.lo <= ci.hi
    custom = bootstrap_ci(lambda p, y: float(np.mean(y == 0)), probs, labels, n=200)
    assert 0.6 <= custom.lo <= custom.hi == 1.0
    with pytest.raises(ValueError, match="Unknown metric"):
        bootstrap_ci("kappa", probs, labels)


@pytest.mark.parametrize("n, grades", [(60, GRADES), (12, [0, 1, 2, 4]), (6, [0, 1])])
def test_resampled_metrics_equal_the_headline_function_on_every_draw(n, grades):
    """The NumPy path the bootstrap scores draws with gives scikit-learn's values, nan included
    (small sets: draws that miss a grade or a side of the referable split)."""
    probs, labels = _random_set(n=n, seed=9, grades=grades)
    indices = np.random.default_rng(2).integers(0, n, size=(40, n))
    fast = resampled_metrics(probs, labels, indices)
    assert fast.shape == (len(HEADLINE), 40)
    undefined = 0
    for draw, rows in enumerate(indices):
        reference = compute_dr_metrics(probs[rows], labels[rows])
        for k, name in enumerate(HEADLINE):
            if math.isnan(reference[name]):
                undefined += 1
                assert math.isnan(fast[k, draw]), (name, draw)
            else:
                assert fast[k, draw] == pytest.approx(reference[name], abs=1e-9), (name, draw)
    if n < 10:
        assert undefined > 0  # the nan cases were reached
    with pytest.raises(ValueError, match="Unknown metric 'kappa'"):
        resampled_metrics(probs, labels, indices, ("kappa",))


@pytest.mark.slow
def test_headline_intervals_are_those_of_a_direct_bootstrap(monkeypatch):
    """compute_dr_metrics' CIs equal percentiles of scikit-learn's metrics on the documented
    draws, default_rng(seed).integers(0, N, (n, N)), also when drawn in several batches."""
    probs, labels = _random_set(n=80, seed=10)
    monkeypatch.setattr("dr_hf.metrics.bootstrap.MAX_BATCH_ELEMENTS", 80 * 7)
    result = compute_dr_metrics(probs, labels, bootstrap=50, seed=4)
    indices = np.random.default_rng(4).integers(0, 80, size=(50, 80))
    for name in ("qwk", "referable_auroc", "ece"):
        draws = [compute_dr_metrics(probs[i], labels[i])[name] for i in indices]
        assert result["ci95"][name] == pytest.approx(np.quantile(draws, [0.025, 0.975]))
    assert set(result["ci95"]) == set(HEADLINE)
    assert "ci95" not in compute_dr_metrics(probs, labels)
    with pytest.raises(ValueError, match="bootstrap=0"):
        compute_dr_metrics(probs[:1], labels[:1], bootstrap=10)


def test_confusion_matrix_figure_shows_counts_and_recall(tmp_path):
    from PIL import Image

    from dr_hf.evaluation.plots import plot_confusion_matrix

    counts = np.array(
        [[5, 1, 0, 0, 0], [2, 3, 0, 0, 0], [0, 0, 0, 0, 0], [0, 0, 1, 1, 0]] + [[0] * 5]
    )
    with pytest.MonkeyPatch.context() as patch:
        saved = []
        patch.setattr("matplotlib.figure.Figure.savefig", lambda fig, *a, **k: saved.append(fig))
        plot_confusion_matrix(counts, tmp_path / "cm.png")
    left, right = [ax for ax in saved[0].axes if ax.get_title()]
    assert [t.get_text() for t in left.texts][:5] == ["5", "1", "0", "0", "0"]
    assert [t.get_text() for t in right.texts][5:7] == ["0.40", "0.60"]  # grade 1: 2 of 5, 3 of 5
    assert plot_confusion_matrix(counts, tmp_path / "cm.png").is_file()
    with Image.open(tmp_path / "cm.png") as image:
        assert image.size[0] > 600
