"""k-fold cross-validation: stratified disjoint folds, one complete run per fold, resumable fold
by fold, and the summary with out-of-fold metrics."""

import json
import shutil

import numpy as np
import pytest
from conftest import tiny_config
from transformers import TrainerCallback

from dr_hf.cli import main as cli_main
from dr_hf.config.parsing import config_from_dict
from dr_hf.data.loading import load_dr_images
from dr_hf.data.splits import cv_folds, fold_indices
from dr_hf.grading_rule import GradeRule
from dr_hf.metrics import compute_dr_metrics
from dr_hf.run_folder import read_validation_predictions
from dr_hf.training.cv import CVArguments, run_cv


def test_folds_are_stratified_disjoint_and_cover_every_image():
    rng = np.random.default_rng(0)
    labels = rng.choice(5, size=103, p=[0.5, 0.1, 0.2, 0.1, 0.1])
    ids = [f"img{i:03d}" for i in rng.permutation(103)]
    folds = fold_indices(labels, ids, 5, seed=3)
    joined = np.concatenate(folds)
    assert sorted(joined.tolist()) == list(range(103)) and len(set(joined.tolist())) == 103
    for grade in range(5):
        per_fold = [int((labels[fold] == grade).sum()) for fold in folds]
        assert max(per_fold) - min(per_fold) <= 1, (grade, per_fold)
    again = fold_indices(labels, ids, 5, seed=3)
    assert all(np.array_equal(a, b) for a, b in zip(folds, again))
    # The folds follow the ids, not the row order.
    order = rng.permutation(103)
    shuffled = fold_indices(labels[order], [ids[i] for i in order], 5, seed=3)
    as_ids = lambda fs, idl: sorted(sorted(idl[i] for i in f) for f in fs)  # noqa: E731
    assert as_ids(folds, ids) == as_ids(shuffled, [ids[i] for i in order])


def test_folds_keep_each_patient_whole_and_stratify_by_the_worse_eye():
    rng = np.random.default_rng(1)
    grade = np.repeat(rng.choice(5, size=60, p=[0.5, 0.1, 0.2, 0.1, 0.1]), 2)
    labels = grade - (rng.random(120) < 0.3) * (grade > 0)  # the eyes of a patient may differ
    patients = np.repeat(np.arange(60), 2)
    ids = [f"{p}_{eye}" for p, eye in zip(patients, ["left", "right"] * 60)]
    worse = labels.reshape(60, 2).max(axis=1)
    folds = fold_indices(labels, ids, 3, seed=0, groups=patients)
    assert sorted(np.concatenate(folds).tolist()) == list(range(120))
    assert all(len(set(patients[f])) * 2 == len(f) for f in folds)  # both eyes, one fold
    for grade in range(5):
        per_fold = [int((worse[sorted(set(patients[f]))] == grade).sum()) for f in folds]
        assert max(per_fold) - min(per_fold) <= 1, (grade, per_fold)


@pytest.mark.slow
def test_cv_trains_each_fold_resumes_and_summarises(synthetic_dir, tmp_path, capsys):
    output_dir = tmp_path / "cv"
    values = tiny_config(synthetic_dir, output_dir, num_train_epochs=1)
    data_args, model_args, training_args = config_from_dict(values)
    # One fold alone (an array task): no summary until every fold is there.
    assert run_cv(data_args, model_args, training_args, CVArguments(folds=3, fold=1)) is None
    done = (output_dir / "fold-1" / "eval_results.json").stat().st_mtime_ns
    # A fold killed after its checkpoints but before its results resumes, not restarts.
    summary = run_cv(data_args, model_args, training_args, CVArguments(folds=3))
    assert (output_dir / "fold-1" / "eval_results.json").stat().st_mtime_ns == done
    shutil.rmtree(output_dir / "fold-2" / "best")
    (output_dir / "fold-2" / "eval_results.json").unlink()
    steps = json.loads(
        next((output_dir / "fold-2").glob("checkpoint-*/trainer_state.json")).read_text()
    )
    summary = run_cv(data_args, model_args, training_args, CVArguments(folds=3))
    assert (output_dir / "fold-2" / "best").is_dir()
    history = json.loads((output_dir / "fold-2" / "training_history.json").read_text())
    assert history["epoch"] == [steps["epoch"]]  # the resumed run added no epoch

    ids, labels, probabilities = [], [], []
    for fold in range(3):
        fold_ids, fold_labels, fold_probs = read_validation_predictions(output_dir / f"fold-{fold}")
        ids, labels, probabilities = (
            ids + fold_ids,
            labels + fold_labels,
            probabilities + fold_probs,
        )
    assert len(ids) == len(set(ids)) == 60  # every image graded once, out of fold
    images = load_dr_images(data_args)  # the folds are those the splits module cuts
    expected_folds = [sorted(images.select(f)["image_id"]) for f in cv_folds(images, 3, 42)]
    fold_ids = [sorted(read_validation_predictions(output_dir / f"fold-{k}")[0]) for k in range(3)]
    assert fold_ids == expected_folds
    rule = GradeRule.from_record(summary["grade_rule"])  # cut points fitted out of fold
    assert rule.rule == "thresholds"
    expected = compute_dr_metrics(np.asarray(probabilities), np.asarray(labels), rule=rule)
    assert summary["num_images"] == 60 and summary["folds"] == 3
    qwk = summary["metrics"]["qwk"]
    assert qwk["out_of_fold"] == pytest.approx(expected["qwk"])
    per_fold = [
        json.loads((output_dir / f"fold-{k}" / "eval_results.json").read_text())["qwk"]
        for k in range(3)
    ]
    assert qwk["folds"] == per_fold and qwk["mean"] == pytest.approx(np.mean(per_fold))
    assert json.loads((output_dir / "cv_summary.json").read_text()) == summary

    assert cli_main(["cv", "--summarize", str(output_dir)]) == 0
    assert "out of fold" in capsys.readouterr().out
    assert cli_main(["cv", "--summarize", str(tmp_path / "nothing")]) == 2


def test_cv_refuses_an_explicit_validation_set(synthetic_dir, tmp_path):
    values = tiny_config(synthetic_dir, tmp_path / "cv", validation_dir=str(synthetic_dir))
    with pytest.raises(ValueError, match="validation_dir"):
        run_cv(*config_from_dict(values), CVArguments(folds=2))


class KilledAt(TrainerCallback):
    """Stops the run of one fold at a step, as a killed job would (after a checkpoint)."""

    def __init__(self, fold: str, step: int):
        self.fold, self.step = fold, step

    def on_step_end(self, args, state, control, **kwargs):
        if args.output_dir.endswith(self.fold) and state.global_step == self.step:
            raise KeyboardInterrupt(f"killed at step {self.step} of {self.fold}")


@pytest.mark.slow
def test_cv_killed_in_a_fold_and_resumed_matches_an_uninterrupted_run(synthetic_dir, tmp_path):
    def results(output_dir, fold):
        saved = json.loads((output_dir / f"fold-{fold}" / "eval_results.json").read_text())
        return {k: v for k, v in saved.items() if k != "best_checkpoint"}

    def cv(output_dir, callbacks=None):
        args = config_from_dict(tiny_config(synthetic_dir, output_dir))  # 3 epochs of 5 steps
        return run_cv(*args, CVArguments(folds=3), callbacks)

    whole = tmp_path / "whole"
    cv(whole)
    killed = tmp_path / "killed"
    with pytest.raises(KeyboardInterrupt):
        cv(killed, [KilledAt("fold-1", step=7)])  # the second fold, mid-epoch 2
    assert not (killed / "fold-2").exists() and (killed / "fold-1" / "checkpoint-5").is_dir()
    summary = cv(killed)
    for fold in (0, 2):
        assert results(killed, fold) == results(whole, fold)
    assert (killed / "fold-1" / "best").is_dir()
    assert summary["metrics"]["qwk"]["folds"][0] == results(whole, 0)["qwk"]


def test_a_cv_folder_stands_for_its_fold_models(tmp_path):
    from dr_hf.inference import is_model_folder, named_models
    from dr_hf.run_folder import cv_fold_models

    cv = tmp_path / "cv5"
    for fold in (0, 1, 10, 2):
        (cv / f"fold-{fold}" / "best").mkdir(parents=True)
    assert cv_fold_models(cv) == []  # no cv_summary.json: an ordinary folder
    with pytest.raises(FileNotFoundError, match="cv5"):  # and no model folder either
        named_models(cv)
    (cv / "cv_summary.json").write_text("{}")
    expected = [cv / f"fold-{k}" / "best" for k in (0, 1, 2, 10)]
    assert named_models(cv) == expected and named_models([str(cv)]) == expected
    assert is_model_folder(cv)


def test_cv_help_lists_the_fold_and_the_training_flags(capsys):
    assert cli_main(["cv", "--help"]) == 0
    shown = capsys.readouterr().out
    assert all(flag in shown for flag in ("--summarize", "--folds", "--fold_seed", "--data_dir"))
