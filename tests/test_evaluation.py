"""`dr-hf evaluate` on tiny trained models: report files, metrics against scikit-learn, CIs, TTA,
every model kind reproducing the figures training saved, and other data layouts."""

import csv
import json
import shutil

import numpy as np
import pytest
import safetensors.torch
import torch
import yaml
from PIL import Image
from sklearn.metrics import accuracy_score, cohen_kappa_score, f1_score, roc_auc_score

from dr_hf.cli import evaluate_main
from dr_hf.config.arguments import DataArguments
from dr_hf.data.loading import load_dr_dataset
from dr_hf.evaluation.evaluate import evaluate_model
from dr_hf.grading_rule import GradeRule, cut
from dr_hf.metrics import compute_dr_metrics, expected_calibration_error
from dr_hf.models.lora import BASE_WEIGHTS
from dr_hf.predictions import outputs_of
from dr_hf.predictions import read_predictions as read_table

torch.set_num_threads(1)
FIGURES = ("confusion_matrix", "roc", "reliability")


@pytest.fixture(scope="module")
def report(trained_run, synthetic_dir, tmp_path_factory):
    """The CLI's report on the whole synthetic set, with TTA and 200 bootstrap resamples."""
    out = tmp_path_factory.mktemp("report")
    best = str(trained_run[0] / "best")
    argv = ["--model", best, "--data", str(synthetic_dir), "--output", str(out)]
    code = evaluate_main(argv + ["--tta", "--bootstrap", "200"])
    return code, out, json.loads((out / "metrics.json").read_text())


def read_predictions(folder):
    rows = list(csv.DictReader((folder / "predictions.csv").open()))
    labels = np.array([int(row["true_grade"]) for row in rows])
    predicted = np.array([int(row["grade"]) for row in rows])
    probs = np.array([[float(row[f"prob_{g}"]) for g in range(5)] for row in rows])
    return rows, labels, predicted, probs


def test_report_holds_every_image_and_valid_figures(report, capsys):
    code, out, metrics = report
    assert code == 0
    rows, labels, predicted, probs = read_predictions(out)
    assert metrics["num_images"] == len(rows) == 60 and len({r["image"] for r in rows}) == 60
    assert metrics["grade_counts"] == np.bincount(labels, minlength=5).tolist()
    decided = probs.argmax(axis=1)
    if rows[0]["grade_rule"] == "thresholds":  # each row's grade is its own cells' rule
        cut_points = [float(c) for c in rows[0]["cut_points"].split(";")]
        decided = cut([float(row["score"]) for row in rows], cut_points)
    assert np.array_equal(predicted, decided)
    assert metrics["preprocessing"]["image_size"] == 32
    for name in FIGURES:
        for path in (out / f"{name}.png", out / f"{name}_tta.png"):
            with Image.open(path) as image:
                assert image.format == "PNG" and min(image.size) > 300
                image.verify()


def test_metrics_equal_scikit_learn_on_the_written_predictions(report):
    _, out, metrics = report
    _, labels, predicted, probs = read_predictions(out)
    assert len(np.unique(labels)) == 5  # every grade present: sklearn's macro AUROC is defined
    assert metrics["accuracy"] == pytest.approx(accuracy_score(labels, predicted), abs=1e-9)
    qwk = cohen_kappa_score(labels, predicted, weights="quadratic", labels=range(5))
    assert metrics["qwk"] == pytest.approx(qwk, abs=1e-9)
    assert metrics["macro_f1"] == pytest.approx(f1_score(labels, predicted, average="macro"))
    assert metrics["macro_auroc"] == pytest.approx(
        roc_auc_score(labels, probs, multi_class="ovr"), abs=1e-4
    )
    referable, scores = labels >= 2, probs[:, 2:].sum(axis=1)
    assert metrics["referable_auroc"] == pytest.approx(roc_auc_score(referable, scores), abs=1e-4)
    for grade in range(5):
        recall = np.mean(predicted[labels == grade] == grade)
        assert metrics[f"class_{grade}_acc"] == pytest.approx(recall)

    # Operating points: the best sensitivity of any threshold that keeps the specificity.
    for name, target in (("spec_90", 0.90), ("spec_95", 0.95)):
        point = metrics["referable_operating_points"][name]
        best = max(
            np.mean(scores[referable] >= t)
            for t in np.append(np.unique(scores), np.inf)
            if np.mean(scores[~referable] < t) >= target
        )
        assert point["sensitivity"] == pytest.approx(best, abs=1e-9)
        assert point["specificity"] >= target
        at_threshold = scores[referable] >= point["threshold"] - 1e-6  # the CSV rounds to 1e-6
        assert np.mean(at_threshold) == pytest.approx(best, abs=1e-9)


def test_confidence_intervals_contain_the_point_estimates(report):
    _, _, metrics = report
    for source in (metrics, metrics["tta"]):
        for name in ("qwk", "macro_auroc", "referable_auroc"):
            lo, hi = source["ci95"][name]
            assert lo <= source[name] <= hi and lo < hi, name
    assert metrics["bootstrap"] == 200


def test_tta_figures_are_reported_beside_the_plain_ones(report, capsys):
    _, out, metrics = report
    rows = list(csv.DictReader((out / "predictions.csv").open()))
    plain = np.array([[float(r[f"prob_{g}"]) for g in range(5)] for r in rows])
    tta = np.array([[float(r[f"tta_prob_{g}"]) for g in range(5)] for r in rows])
    assert not np.allclose(plain, tta) and np.allclose(tta.sum(axis=1), 1.0, atol=1e-4)
    assert {"qwk", "ece", "referable_operating_points"} <= set(metrics["tta"])
    labels = np.array([int(r["true_grade"]) for r in rows])
    # the CSV rounds to 1e-6: a confidence on a bin edge could move, so compare to 1e-4
    assert metrics["ece"] == pytest.approx(expected_calibration_error(plain, labels), abs=1e-4)
    assert metrics["tta"]["ece"] == pytest.approx(expected_calibration_error(tta, labels), abs=1e-4)


@pytest.mark.parametrize("kind", ["full", "checkpoint", "lora"])
def test_each_model_kind_reproduces_its_training_metrics(
    kind, trained_run, trained_lora_run, synthetic_dir, tmp_path
):
    run_dir = (trained_lora_run if kind == "lora" else trained_run)[0]
    saved = json.loads((run_dir / "eval_results.json").read_text())
    model = saved["best_checkpoint"] if kind == "checkpoint" else run_dir / "best"
    # A checkpoint holds neither the temperature nor the cut points fitted after training: graded
    # by argmax, it matches the best model's argmax grades (a temperature changes no argmax).
    rule = {"grade_rule": "argmax"} if kind == "checkpoint" else {}
    metrics = evaluate_model(
        model,
        DataArguments(data_dir=str(synthetic_dir)),
        tmp_path,
        split="validation",
        bootstrap=0,
        **rule,
    )
    if kind == "checkpoint":
        table = read_table(run_dir / "validation_predictions.csv", require_labels=True)
        by_argmax = compute_dr_metrics(
            outputs_of(table), table["true_grade"].astype(int).to_numpy(), rule=GradeRule()
        )
        saved |= {k: by_argmax[k] for k in ("confusion_matrix", "qwk", "accuracy")}
    assert metrics["num_images"] == sum(map(sum, saved["confusion_matrix"]))
    assert metrics["confusion_matrix"] == saved["confusion_matrix"]
    for name in ("qwk", "accuracy", "macro_auroc", "referable_auroc"):
        assert metrics[name] == pytest.approx(saved[name], abs=1e-6), name
    assert "ci95" not in metrics and (tmp_path / "roc.png").is_file()


def test_grade_folders_are_evaluated_whole(trained_run, synthetic_dir, tmp_path):
    labels = dict(csv.reader((synthetic_dir / "train.csv").open()))
    root = tmp_path / "by_grade"
    for image_id, grade in list(labels.items())[1:21]:
        (root / grade).mkdir(parents=True, exist_ok=True)
        shutil.copy(synthetic_dir / "train_images" / f"{image_id}.png", root / grade)
    metrics = evaluate_model(
        trained_run[0] / "best", DataArguments(data_dir=str(root)), tmp_path / "out", bootstrap=50
    )
    assert metrics["num_images"] == 20 and metrics["split"] == "all"
    assert (tmp_path / "out" / "predictions.csv").read_text().count("\n") == 21


def test_validation_split_is_the_runs_own_from_its_config(trained_run, synthetic_dir, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(synthetic_dir, data)
    best = tmp_path / "run" / "best"
    shutil.copytree(trained_run[0] / "best", best)
    config = yaml.safe_load((trained_run[0] / "config.yaml").read_text())
    split = {"validation_split": 0.3, "split_seed": 7, "max_eval_samples": 12}  # not the defaults
    config |= split | {"data_dir": str(data)}
    (tmp_path / "run" / "config.yaml").write_text(yaml.safe_dump(config))
    expected = load_dr_dataset(DataArguments(data_dir=str(data), **split))
    ids = list(expected["validation"]["image_id"])
    # A corrupt training image does not concern the validation split: it is not even opened.
    train_id = next(i for i in expected["train"]["image_id"] if i not in ids)
    (data / "train_images" / f"{train_id}.png").write_bytes(b"not a PNG")

    assert evaluate_main(["--model", str(best), "--split", "validation", "--bootstrap", "0"]) == 0
    report = tmp_path / "run" / "eval_best_data_validation"
    assert [row["image"] for row in read_predictions(report)[0]] == ids
    metrics = evaluate_model(best, split="validation", bootstrap=0, output_dir=tmp_path / "api")
    assert metrics["num_images"] == 12
    # A data flag given on the command line overrides the run's value, and only that one.
    out = tmp_path / "five"
    argv = ["--model", str(best), "--split", "validation", "--max_eval_samples", "5"]
    assert evaluate_main(argv + ["--bootstrap", "0", "--output", str(out)]) == 0
    assert [row["image"] for row in read_predictions(out)[0]] == ids[:5]
    with pytest.raises(ValueError, match="No data"):
        evaluate_model(best, bootstrap=0, output_dir=tmp_path / "nothing")  # split "all"


@pytest.mark.slow
def test_default_report_folders_are_per_data_and_never_overwritten(
    trained_run, synthetic_dir, tmp_path, capsys
):
    best = tmp_path / "run" / "best"
    shutil.copytree(trained_run[0] / "best", best)
    other = tmp_path / "by_grade"
    for path in sorted((synthetic_dir / "train_images").glob("*.png"))[:5]:
        (other / "2").mkdir(parents=True, exist_ok=True)
        shutil.copy(path, other / "2")
    base = ["--model", str(best), "--bootstrap", "0"]
    assert evaluate_main(base + ["--data", str(synthetic_dir), "--tta"]) == 0
    assert evaluate_main(base + ["--data", str(other)]) == 0
    first = tmp_path / "run" / f"eval_best_{synthetic_dir.name}"
    second = tmp_path / "run" / "eval_best_by_grade"
    assert json.loads((first / "metrics.json").read_text())["num_images"] == 60
    assert json.loads((second / "metrics.json").read_text())["num_images"] == 5
    assert str(first) in capsys.readouterr().out

    report = (first / "metrics.json").read_text()
    assert evaluate_main(base + ["--data", str(synthetic_dir)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (first / "metrics.json").read_text() == report and (first / "roc_tta.png").is_file()
    with pytest.raises(FileExistsError, match="metrics.json"):
        evaluate_model(best, DataArguments(data_dir=str(other)), bootstrap=0)
    assert evaluate_main(base + ["--data", str(synthetic_dir), "--overwrite"]) == 0
    assert "tta" not in json.loads((first / "metrics.json").read_text())
    assert not (first / "roc_tta.png").exists()  # no figure of the replaced report is left


def test_bad_arguments_exit_with_2(trained_run, synthetic_dir):
    best = str(trained_run[0] / "best")
    assert evaluate_main(["--model", best, "--data", str(synthetic_dir), "--split", "test"]) == 2
    assert evaluate_main(["--data", str(synthetic_dir)]) == 2  # no --model
    assert evaluate_main(["--model", best, "--data", str(synthetic_dir / "missing")]) == 2
    assert evaluate_main(["--model", str(synthetic_dir), "--data", str(synthetic_dir)]) == 2


def test_adapter_on_a_wrong_base_exits_with_2_and_says_why(
    trained_lora_run, synthetic_dir, tmp_path, capsys
):
    adapter = tmp_path / "adapter"
    shutil.copytree(trained_lora_run[0] / "best", adapter)
    base = safetensors.torch.load_file(adapter / BASE_WEIGHTS)
    base = {
        key: value + 0.01 if value.is_floating_point() else value for key, value in base.items()
    }
    safetensors.torch.save_file(base, adapter / BASE_WEIGHTS)  # same architecture, other weights
    argv = ["--model", str(adapter), "--data", str(synthetic_dir), "--output", str(tmp_path / "r")]
    assert evaluate_main(argv) == 2
    assert "fingerprint" in capsys.readouterr().err and not (tmp_path / "r").exists()
