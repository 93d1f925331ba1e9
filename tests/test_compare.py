"""`dr-hf compare`: evaluation reports of the same images side by side, with bootstrap CIs and
paired-bootstrap tests; reports of other images or other true grades are refused."""

import csv
import json
import math
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from dr_hf.cli import main as cli_main
from dr_hf.config.arguments import DataArguments
from dr_hf.evaluation.compare import HEADLINE, compare_reports, paired_p_value
from dr_hf.evaluation.evaluate import evaluate_model
from dr_hf.predictions import predictions_table, write_predictions

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def reports(trained_run, synthetic_dir, tmp_path_factory):
    """Reports of best/ and of its best checkpoint-N on the whole synthetic set."""
    root = tmp_path_factory.mktemp("reports")
    output_dir = trained_run[0]
    checkpoint = json.loads((output_dir / "eval_results.json").read_text())["best_checkpoint"]
    data = DataArguments(data_dir=str(synthetic_dir))
    for name, model in (("best", output_dir / "best"), ("checkpoint", checkpoint)):
        evaluate_model(model, data, root / name, bootstrap=0)
    return root / "best", root / "checkpoint"


def write_report(folder, ids, labels, probabilities, model="hand-made"):
    """A report folder as `dr-hf evaluate` writes it: its metrics.json names the model, and
    predictions.csv is the predictions table."""
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps({"model": model}))
    table = predictions_table(ids, probabilities, labels=labels)
    write_predictions(table, folder / "predictions.csv")
    return folder


def hand_made(n=120, seed=0):
    """Labels, a grader that puts 0.9 on the true grade, and one guessing at random."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 5
    good = np.full((n, 5), 0.025)
    good[np.arange(n), labels] = 0.9
    bad = rng.dirichlet(np.ones(5), size=n)
    return [f"img{i:03d}" for i in range(n)], labels, good, bad


def test_two_reports_of_the_same_images_are_compared(reports, tmp_path, capsys):
    out = tmp_path / "cmp"
    argv = ["compare", *map(str, reports), "--output", str(out), "--bootstrap", "200"]
    assert cli_main(argv) == 0
    printed = capsys.readouterr().out
    assert "| qwk |" in printed and str(out) in printed
    result = json.loads((out / "comparison.json").read_text())
    assert [entry["name"] for entry in result["reports"]] == ["best", "checkpoint"]
    saved = json.loads((reports[0] / "metrics.json").read_text())
    first = result["reports"][0]
    assert first["metrics"]["qwk"] == pytest.approx(saved["qwk"], abs=1e-6)
    assert first["metrics"]["referable_auroc"] == pytest.approx(saved["referable_auroc"], abs=1e-4)
    for entry in result["reports"]:
        lo, hi = entry["ci95"]["qwk"]
        assert lo <= entry["metrics"]["qwk"] <= hi
    (pair,) = result["pairs"]
    for metric in ("qwk", "referable_auroc"):
        p = pair[metric]["p_value"]
        assert math.isfinite(p) and 0.0 <= p <= 1.0
    table = (out / "comparison.md").read_text()
    assert all(f"| {metric} |" in table for metric in HEADLINE)
    assert "paired bootstrap" in table and "DeLong" in table
    with Image.open(out / "comparison.png") as figure:
        assert figure.format == "PNG" and figure.size[0] > 300
    assert cli_main(argv) == 2  # an earlier comparison is kept
    assert "--overwrite" in capsys.readouterr().err


def test_reports_of_other_images_are_refused_naming_them(reports, tmp_path, capsys):
    rows = list(csv.reader((reports[0] / "predictions.csv").open()))
    header, body = rows[0], rows[1:]
    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(reports[0] / "metrics.json", other)
    body = body[2:] + [["stranger"] + body[0][1:]]
    with open(other / "predictions.csv", "w", newline="") as handle:
        csv.writer(handle).writerows([header, *body])
    missing = [rows[1][0], rows[2][0]]
    with pytest.raises(ValueError, match="other images") as error:
        compare_reports([reports[0], other], tmp_path / "cmp", bootstrap=10)
    assert all(image_id in str(error.value) for image_id in [*missing, "stranger"])
    assert cli_main(["compare", str(reports[0]), str(other), "--output", str(tmp_path / "c")]) == 2
    assert "stranger" in capsys.readouterr().err and not (tmp_path / "c").exists()


def test_other_true_grades_and_missing_files_are_refused(tmp_path):
    ids, labels, good, _ = hand_made(20)
    first = write_report(tmp_path / "a", ids, labels, good)
    relabelled = labels.copy()
    relabelled[3] = (relabelled[3] + 1) % 5
    second = write_report(tmp_path / "b", ids, relabelled, good)
    with pytest.raises(ValueError, match="true grades.*img003"):
        compare_reports([first, second], tmp_path / "cmp", bootstrap=10)
    half = tmp_path / "half"
    half.mkdir()
    shutil.copy(first / "metrics.json", half)
    with pytest.raises(FileNotFoundError, match="half holds no predictions.csv"):
        compare_reports([first, half], tmp_path / "cmp", bootstrap=10)
    with pytest.raises(ValueError, match="two report folders"):
        compare_reports([first], tmp_path / "cmp")


def test_paired_bootstrap_tells_a_better_grader_from_itself(tmp_path):
    ids, labels, good, bad = hand_made()
    order = np.random.default_rng(1).permutation(len(ids))  # rows in another order
    reports = [
        write_report(tmp_path / "good", ids, labels, good),
        write_report(tmp_path / "good_again", [ids[i] for i in order], labels[order], good[order]),
        write_report(tmp_path / "bad", ids, labels, bad),
    ]
    result = compare_reports(reports, tmp_path / "cmp", bootstrap=500, seed=0)
    pairs = {(pair["a"], pair["b"]): pair for pair in result["pairs"]}
    same, better = pairs[("good", "good_again")], pairs[("good", "bad")]
    for metric in ("qwk", "referable_auroc"):
        assert same[metric]["difference"] == pytest.approx(0.0, abs=1e-9)
        assert same[metric]["p_value"] > 0.5
        assert better[metric]["difference"] > 0.2
        assert better[metric]["p_value"] < 0.01
    assert paired_p_value(np.array([0.1, 0.2, -0.1, 0.3]), 0.15) == pytest.approx(0.5)
    assert paired_p_value(np.array([-0.1, -0.2]), -0.1) == 0.0
    assert paired_p_value(np.array([0.1, 0.2]), -0.1) == 1.0  # capped


@pytest.mark.slow
def test_p_values_are_those_of_a_direct_paired_bootstrap(tmp_path):
    """Two noisy graders of the same images: the p-values compare reports equal those of a
    paired bootstrap written out here with scikit-learn's metrics."""
    from sklearn.metrics import cohen_kappa_score, roc_auc_score

    rng = np.random.default_rng(5)
    n, draws = 150, 300
    labels = rng.integers(0, 5, n)
    graders = []
    for noise in (1.0, 1.6):
        logits = np.eye(5)[labels] * 2.0 + rng.normal(scale=noise, size=(n, 5))
        graders.append(np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True))
    ids = [f"p{i:03d}" for i in range(n)]
    folders = [write_report(tmp_path / f"g{k}", ids, labels, p) for k, p in enumerate(graders)]
    result = compare_reports(folders, tmp_path / "cmp", bootstrap=draws, seed=11)
    # Compare reads the probabilities as written (6 decimals).
    probs = [np.round(p, 6) for p in graders]

    def qwk(p, y):
        return cohen_kappa_score(y, p.argmax(axis=1), weights="quadratic", labels=range(5))

    def referable_auroc(p, y):
        return roc_auc_score(y >= 2, p[:, 2:].sum(axis=1))

    indices = np.random.default_rng(11).integers(0, n, size=(draws, n))
    for name, metric in (("qwk", qwk), ("referable_auroc", referable_auroc)):
        observed = metric(probs[0], labels) - metric(probs[1], labels)
        differences = np.array(
            [metric(probs[0][i], labels[i]) - metric(probs[1][i], labels[i]) for i in indices]
        )
        share = np.mean(differences <= 0) if observed >= 0 else np.mean(differences >= 0)
        pair = result["pairs"][0][name]
        assert pair["difference"] == pytest.approx(observed, abs=1e-9)
        assert pair["p_value"] == pytest.approx(min(1.0, 2 * share), abs=1e-12)
