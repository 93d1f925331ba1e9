"""The grading rule: cut points fitted for QWK, the rule applied to outputs, and the metrics of
regression scores."""

import numpy as np
import pytest
from sklearn.metrics import cohen_kappa_score
from transformers import PretrainedConfig

from dr_hf.grading_rule import (
    DEFAULT_CUT_POINTS,
    GRADE_RULE_KEY,
    HEAD_KEY,
    GradeRule,
    continuous_scores,
    cut,
    expected_grade,
    fast_qwk,
    fit_cut_points,
)
from dr_hf.metrics import compute_dr_metrics, model_outputs, resampled_metrics


def shifted_scores(n: int = 600, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Continuous scores of a grader biased towards grade 0, as an under-confident softmax is:
    grade g scores near 0.6 * g, so the default cut points 0.5/1.5/2.5/3.5 call most grades too
    low and cut points near 0.3/0.9/1.5/2.1 are right."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 5, n)
    return 0.6 * labels + rng.normal(0, 0.08, n), labels


def test_cut_counts_the_cut_points_at_or_below_the_score():
    scores = np.array([-1.0, 0.5, 0.49, 1.7, 3.5, 9.0])
    assert cut(scores, DEFAULT_CUT_POINTS).tolist() == [0, 1, 0, 2, 4, 4]


def test_fitted_cut_points_raise_qwk_over_the_defaults_and_find_the_known_optimum():
    scores, labels = shifted_scores()
    points, record = fit_cut_points(scores, labels)
    default = cohen_kappa_score(labels, cut(scores, DEFAULT_CUT_POINTS), weights="quadratic")
    fitted = cohen_kappa_score(labels, cut(scores, points), weights="quadratic")
    assert default < 0.9 and fitted > 0.99 > default
    assert record["qwk_default_cut_points"] == pytest.approx(default)
    assert record["qwk_fitted"] == pytest.approx(fitted)
    # each cut point lies in the gap between two neighbouring grades' scores
    for k, point in enumerate(points):
        assert 0.6 * k + 0.15 < point < 0.6 * (k + 1) - 0.15
    assert all(b > a for a, b in zip(points, points[1:]))


@pytest.mark.parametrize("seed", range(5))
def test_fitted_cut_points_never_cross_and_never_lose_to_the_defaults(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 5, 200)
    scores = rng.normal(2.0, 1.5, 200)  # scores that carry no information
    points, record = fit_cut_points(scores, labels)
    assert all(b > a for a, b in zip(points, points[1:]))
    assert record["qwk_fitted"] >= record["qwk_default_cut_points"]


def test_fast_qwk_equals_scikit_learn():
    rng = np.random.default_rng(3)
    for _ in range(20):
        labels, grades = rng.integers(0, 5, 50), rng.integers(0, 5, 50)
        expected = cohen_kappa_score(labels, grades, weights="quadratic", labels=range(5))
        assert fast_qwk(labels, grades) == pytest.approx(expected)


def test_rule_applies_argmax_or_cut_points_to_probabilities_and_scores():
    probs = np.array([[0.5, 0.0, 0.0, 0.0, 0.5], [0.1, 0.6, 0.3, 0.0, 0.0]])
    assert expected_grade(probs).tolist() == pytest.approx([2.0, 1.2])
    assert GradeRule().grades(probs).tolist() == [0, 1]
    rule = GradeRule("thresholds", (0.5, 1.1, 2.5, 3.5))
    assert rule.grades(probs).tolist() == [2, 2]
    assert rule.grades(np.array([[0.2], [3.7]])).tolist() == [0, 4]
    assert continuous_scores(np.array([[0.2], [3.7]])).tolist() == [0.2, 3.7]
    assert rule.describe() == "thresholds 0.5/1.1/2.5/3.5"
    assert GradeRule.from_record(rule.record()) == rule


def test_bad_rules_are_clear_errors():
    with pytest.raises(ValueError, match="needs cut points"):
        GradeRule("thresholds")
    with pytest.raises(ValueError, match="increase strictly"):
        GradeRule("thresholds", (0.5, 2.5, 1.5, 3.5))
    with pytest.raises(ValueError, match="not known"):
        GradeRule("rounding")
    with pytest.raises(ValueError, match="regression model has no grade probabilities"):
        GradeRule().grades(np.array([[1.2]]))
    regression = PretrainedConfig(**{HEAD_KEY: "regression"})
    with pytest.raises(ValueError, match="regression model has no grade probabilities"):
        GradeRule.from_config(regression, rule="argmax")
    with pytest.raises(ValueError, match="needs cut points"):
        GradeRule.from_config(regression)
    softmax = PretrainedConfig()
    assert GradeRule.from_config(softmax) == GradeRule()
    with pytest.raises(ValueError, match="needs cut points"):
        GradeRule.from_config(softmax, rule="thresholds")


def test_from_config_reads_the_saved_rule_and_lets_the_caller_choose():
    saved = GradeRule("thresholds", (0.4, 1.4, 2.4, 3.4)).record(qwk_fitted=0.9)
    config = PretrainedConfig(**{GRADE_RULE_KEY: saved})
    assert GradeRule.from_config(config).rule == "thresholds"
    assert GradeRule.from_config(config, rule="argmax") == GradeRule("argmax", (0.4, 1.4, 2.4, 3.4))


def test_metrics_of_regression_scores_use_the_score_and_the_cut_points():
    scores, labels = shifted_scores(300, seed=1)
    outputs = scores[:, None]
    rule = GradeRule("thresholds", fit_cut_points(scores, labels)[0])
    metrics = compute_dr_metrics(outputs, labels, bootstrap=50, rule=rule)
    grades = rule.grades(outputs)
    assert metrics["qwk"] == pytest.approx(
        cohen_kappa_score(labels, grades, weights="quadratic", labels=range(5))
    )
    assert metrics["referable_auroc"] > 0.99  # AUROC of the score itself
    assert np.isnan(metrics["macro_auroc"]) and np.isnan(metrics["ece"])
    assert metrics["ci95"]["macro_auroc"] == [None, None]
    point = metrics["referable_operating_points"]["spec_90"]
    assert 0.6 < point["threshold"] < 1.2  # a threshold on the score, between grades 1 and 2
    # the vectorised bootstrap scores the decided grades, as the point estimate does
    everything = np.arange(len(labels))[None, :]
    draw = resampled_metrics(outputs, labels, everything, ("qwk", "accuracy"), grades=grades)
    assert draw[:, 0] == pytest.approx([metrics["qwk"], metrics["accuracy"]])


def test_model_outputs_softmaxes_class_logits_and_keeps_regression_scores():
    log_probs = np.log(np.array([[0.1, 0.2, 0.3, 0.2, 0.2]]))
    assert model_outputs(log_probs) == pytest.approx(np.exp(log_probs))
    assert model_outputs(np.array([[2.7]])).tolist() == [[2.7]]
