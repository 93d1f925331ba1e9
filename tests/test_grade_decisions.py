"""Grading rules at inference: predict, evaluate, ensembles and the demo decide grades by the
model's rule (argmax or cut points on the expected grade or a regression score), every row says
which, and an ensemble cuts after averaging.

The models are test_resnet graders whose classifier weights are zero: every photograph gets the
classifier's bias as logits, so each model's outputs are known exactly (a softmax model's
probabilities, or a regression model's score).
"""

import json
import shutil

import numpy as np
import pytest
import torch
from sklearn.metrics import confusion_matrix

from dr_hf.cli import predict_main
from dr_hf.config.arguments import DataArguments, ModelArguments
from dr_hf.evaluation.evaluate import evaluate_model
from dr_hf.grading_rule import GRADE_RULE_KEY, HEAD_KEY, GradeRule, cut, expected_grade
from dr_hf.inference import grade_rule_for, load_grader, load_graders, predict
from dr_hf.models.graders import build_model, model_config
from dr_hf.models.parts import OPERATING_POINTS_KEY
from dr_hf.predictions import (
    PROB_COLUMNS,
    outputs_of,
    probabilities_of,
    read_predictions,
    rule_of,
)

torch.set_num_threads(1)

OWN_CUT_POINTS = (0.5, 1.8, 2.5, 3.5)
ENSEMBLE_CUT_POINTS = "0.5,1.5,2.5,3.5"
# expected grades 1.3 and 1.75: each member's own cut points (1.8) call both grade 1, and the
# average, 1.525, is grade 2 by the ensemble's cut points 0.5/1.5/2.5/3.5, while the averaged
# probabilities' argmax is grade 0
PROBS_A = [0.40, 0.20, 0.20, 0.10, 0.10]
PROBS_B = [0.30, 0.15, 0.20, 0.20, 0.15]


def constant_model(
    folder, outputs, rule: GradeRule | None = None, head: str | None = None, spec90=None
):
    """A test_resnet grader saved in `folder` whose output is `outputs` for every photograph:
    five probabilities (softmax of their log), or one regression score; with the grading rule
    `rule`, head `head` and a spec90 referable threshold in its config, as training saves them."""
    config, processor = model_config(ModelArguments(model_name="test_resnet"), image_size=32)
    regression = len(outputs) == 1
    if regression:
        config.num_labels, config.problem_type = 1, "regression"
    model = build_model(config)
    classifier = model.timm_model.get_classifier()
    logits = outputs if regression else np.log(outputs)
    with torch.no_grad():
        classifier.weight.zero_()
        classifier.bias.copy_(torch.tensor(logits, dtype=torch.float32))
    if head or regression:
        setattr(model.config, HEAD_KEY, head or "regression")
    if rule is not None:
        setattr(model.config, GRADE_RULE_KEY, rule.record(qwk_fitted=0.5))
    if spec90 is not None:
        setattr(model.config, OPERATING_POINTS_KEY, {"spec_90": {"threshold": spec90}})
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def photos(synthetic_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("photos")
    for path in sorted((synthetic_dir / "train_images").glob("*.png"))[:4]:
        shutil.copy(path, folder / path.name)
    return folder


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Softmax models with and without saved cut points, and regression models."""
    root = tmp_path_factory.mktemp("models")
    own = GradeRule("thresholds", OWN_CUT_POINTS)
    return {
        "plain": constant_model(root / "plain", PROBS_A),
        "a": constant_model(root / "a", PROBS_A, own),
        "b": constant_model(root / "b", PROBS_B, own),
        "reg_a": constant_model(root / "reg_a", [1.3], own),
        "reg_b": constant_model(root / "reg_b", [1.75], own),
        "reg_spec90": constant_model(root / "reg_spec90", [1.75], own, spec90=1.6),
    }


def run_predict(tmp_path, *args) -> tuple[int, object]:
    out = tmp_path / "preds.csv"
    code = predict_main([*map(str, args), "--output", str(out), "--num-workers", "0"])
    return code, (read_predictions(out) if code == 0 else None)


def rule_applied_to_own_columns(table) -> np.ndarray:
    """Each row's grade recomputed from its own cells: its rule on its score or probabilities."""
    rule = rule_of(table)
    if rule.rule == "argmax":
        return probabilities_of(table).argmax(axis=1)
    return cut(table["score"].to_numpy(float), rule.cut_points)


def test_predict_rows_state_the_rule_and_their_grades_follow_it(models, photos, tmp_path):
    code, saved = run_predict(tmp_path, "--model", models["a"], photos)
    assert code == 0 and len(saved) == 4
    assert set(saved["grade_rule"]) == {"thresholds"} and set(saved["cut_points"]) == {
        "0.5;1.8;2.5;3.5"
    }
    np.testing.assert_allclose(saved["score"].astype(float), 1.3, atol=1e-5)
    np.testing.assert_allclose(
        saved["score"].astype(float), expected_grade(probabilities_of(saved)), atol=1e-5
    )
    grades = saved["grade"].astype(int).to_numpy()
    assert grades.tolist() == [1] * 4
    assert grades.tolist() == rule_applied_to_own_columns(saved).tolist()

    code, argmax = run_predict(tmp_path, "--model", models["a"], photos, "--grade-rule", "argmax")
    assert (
        code == 0 and set(argmax["grade_rule"]) == {"argmax"} and set(argmax["cut_points"]) == {""}
    )
    assert argmax["grade"].astype(int).tolist() == [0] * 4
    assert argmax["grade"].astype(int).tolist() == rule_applied_to_own_columns(argmax).tolist()

    code, given = run_predict(
        tmp_path, "--model", models["plain"], photos, "--cut-points", "0.2,0.7,1.2,3"
    )
    assert code == 0 and set(given["cut_points"]) == {"0.2;0.7;1.2;3.0"}
    assert given["grade"].astype(int).tolist() == [3] * 4  # 1.3 is past 0.2, 0.7 and 1.2


def test_ensemble_cuts_its_averaged_outputs(models, photos):
    members = [models["a"], models["b"]]
    alone = [predict(member, [photos], progress=False) for member in members]
    assert [result.grades.tolist() for result in alone] == [[1] * 4, [1] * 4]  # own cut points
    averaged = predict(members, [photos], cut_points=ENSEMBLE_CUT_POINTS, progress=False)
    assert averaged.scores == pytest.approx([1.525] * 4, abs=1e-5)
    assert averaged.grades.tolist() == [2] * 4
    rows = averaged.table()
    assert set(rows["cut_points"]) == {"0.5;1.5;2.5;3.5"}
    assert rows["grade"].tolist() == rule_applied_to_own_columns(rows).tolist()
    # by default an ensemble takes the argmax of its averaged probabilities
    default = predict(members, [photos], progress=False)
    assert default.grade_rule == GradeRule() and default.grades.tolist() == [0] * 4
    with pytest.raises(ValueError, match="members' cut points were fitted on their own outputs"):
        predict(members, [photos], grade_rule="thresholds", progress=False)


def test_regression_ensemble_cuts_the_mean_score(models, photos):
    members = [models["reg_a"], models["reg_b"]]
    averaged = predict(members, [photos], cut_points=ENSEMBLE_CUT_POINTS, progress=False)
    assert averaged.outputs.shape == (4, 1)
    assert averaged.scores == pytest.approx([1.525] * 4, abs=1e-5)
    assert averaged.grades.tolist() == [2] * 4
    with pytest.raises(ValueError, match="no cut points of its own"):
        predict(members, [photos], progress=False)
    with pytest.raises(ValueError, match="no grade probabilities to take the argmax"):
        predict(members, [photos], grade_rule="argmax", cut_points=None, progress=False)


def test_a_cv_folder_ensemble_uses_its_out_of_fold_cut_points(models, photos, tmp_path):
    cv = tmp_path / "cv"
    for fold, member in enumerate((models["a"], models["b"])):
        shutil.copytree(member, cv / f"fold-{fold}" / "best")
    fitted = GradeRule("thresholds", (0.5, 1.52, 2.5, 3.5)).record(qwk_fitted=0.8)
    (cv / "cv_summary.json").write_text(json.dumps({"folds": 2, "grade_rule": fitted}))
    code, table = run_predict(tmp_path, "--model", cv, photos)
    assert code == 0 and set(table["cut_points"]) == {"0.5;1.52;2.5;3.5"}
    assert table["grade"].astype(int).tolist() == [2] * 4  # 1.525 is past 1.52
    # a subset of the folds is not the cv ensemble: argmax again
    graders = load_graders([cv / "fold-0" / "best"] * 2)
    assert grade_rule_for(graders) == GradeRule()


def test_regression_rows_have_a_score_and_no_probabilities(models, photos, tmp_path):
    missing = tmp_path / "nowhere.png"
    code = predict_main(
        [
            "--model",
            str(models["reg_b"]),
            str(photos),
            str(missing),
            "--output",
            str(tmp_path / "reg.csv"),
            "--tta",
        ]
    )
    assert code == 1  # the missing file failed, the others were graded
    table = read_predictions(tmp_path / "reg.csv")
    graded = table[table["error"] == ""]
    assert len(graded) == 4 and (graded[PROB_COLUMNS + ["referable_prob"]] == "").all(axis=None)
    assert graded["score"].astype(float).tolist() == pytest.approx([1.75] * 4, abs=1e-5)
    assert set(graded["grade_rule"]) == {"thresholds"}
    assert graded["grade"].astype(int).tolist() == rule_applied_to_own_columns(graded).tolist()
    assert graded["grade"].astype(int).tolist() == [1] * 4  # below the own cut point 1.8
    # the reader round-trips it: [N, 1] outputs, the rule, and no probabilities
    assert outputs_of(graded).shape == (4, 1)
    assert rule_of(table) == GradeRule("thresholds", OWN_CUT_POINTS)
    with pytest.raises(ValueError, match="regression model's"):
        probabilities_of(graded)
    # only failures: the empty outputs of a regression model keep their width
    result = predict(models["reg_b"], [missing], progress=False)
    assert result.outputs.shape == (0, 1) and result.table()["error"].tolist() == ["file not found"]


def test_bad_rules_are_refused_before_grading(models, photos, tmp_path, capsys):
    code, _ = run_predict(
        tmp_path, "--model", models["plain"], photos, "--grade-rule", "thresholds"
    )
    assert code == 2 and "needs cut points" in capsys.readouterr().err
    code, _ = run_predict(tmp_path, "--model", models["reg_a"], photos, "--grade-rule", "argmax")
    assert code == 2 and "regression model has no grade probabilities" in capsys.readouterr().err
    code, _ = run_predict(tmp_path, "--model", models["a"], photos, "--cut-points", "1,2")
    assert code == 2 and "give 4 increasing numbers" in capsys.readouterr().err
    code, _ = run_predict(
        tmp_path,
        "--model",
        models["a"],
        "--model",
        models["reg_a"],
        photos,
        "--cut-points",
        "1,2,3,4",
    )
    err = capsys.readouterr().err
    assert code == 2 and "cannot be averaged" in err and str(models["reg_a"]) in err


def test_evaluate_scores_the_rules_grades_and_says_which(models, synthetic_dir, tmp_path):
    data = DataArguments(data_dir=[str(synthetic_dir)])
    saved = evaluate_model(models["a"], data, tmp_path / "saved", bootstrap=0)
    argmax = evaluate_model(
        models["a"], data, tmp_path / "argmax", bootstrap=0, grade_rule="argmax"
    )
    labels = read_predictions(tmp_path / "saved" / "predictions.csv")["true_grade"].astype(int)
    assert saved["grade_rule"]["rule"] == "thresholds" and argmax["grade_rule"]["rule"] == "argmax"
    assert saved["grade_rule"]["cut_points"] == list(OWN_CUT_POINTS)
    for report, grade in ((saved, 1), (argmax, 0)):  # every image: 1.3 by thresholds, 0 by argmax
        expected = confusion_matrix(labels, [grade] * len(labels), labels=range(5)).tolist()
        assert report["confusion_matrix"] == expected
        assert report["accuracy"] == pytest.approx(np.mean(labels == grade))
    table = read_predictions(tmp_path / "saved" / "predictions.csv")
    assert table["grade"].astype(int).tolist() == rule_applied_to_own_columns(table).tolist()


def test_evaluate_a_regression_model_and_an_ensemble_of_them(models, synthetic_dir, tmp_path):
    data = DataArguments(data_dir=[str(synthetic_dir)])
    report = evaluate_model(models["reg_a"], data, tmp_path / "reg", bootstrap=0, tta=True)
    assert report["head"] == "regression" and report["macro_auroc"] is None
    assert not (tmp_path / "reg" / "reliability.png").exists()
    assert (tmp_path / "reg" / "roc.png").is_file()
    table = read_predictions(tmp_path / "reg" / "predictions.csv")
    assert table["tta_score"].astype(float).tolist() == pytest.approx([1.3] * len(table), abs=1e-5)
    ensemble = evaluate_model(
        [models["reg_a"], models["reg_b"]],
        data,
        tmp_path / "ensemble",
        bootstrap=0,
        cut_points=ENSEMBLE_CUT_POINTS,
    )
    labels = table["true_grade"].astype(int)
    assert ensemble["accuracy"] == pytest.approx(np.mean(labels == 2))  # 1.525: grade 2
    # each member graded by its own rule: both grade 1
    assert [member["grade_rule"] for member in ensemble["members"]] == [
        "thresholds 0.5/1.8/2.5/3.5"
    ] * 2
    assert [member["accuracy"] for member in ensemble["members"]] == [
        pytest.approx(np.mean(labels == 1))
    ] * 2


def test_demo_answer_states_the_rule_and_shows_a_regression_score(models, photos):
    from dr_hf.demo.grading import grade_photo

    photo = str(sorted(photos.glob("*.png"))[0])
    answer = grade_photo(load_grader(models["a"], device="cpu"), photo, None)
    assert "<span id='dr-grade'>1</span>" in answer.summary
    assert "cut points 0.5/1.8/2.5/3.5 on the expected grade" in answer.summary
    assert "id='dr-prob-0'>0.4000<" in answer.summary and answer.probabilities is not None
    regression = grade_photo(load_grader(models["reg_b"], device="cpu"), photo, None)
    assert "<span id='dr-grade'>1</span>" in regression.summary
    assert "on the regression score" in regression.summary
    assert "id='dr-score'>1.7500<" in regression.summary
    assert "dr-prob-0" not in regression.summary and regression.probabilities is None
    by_argmax = grade_photo(load_grader(models["a"], device="cpu"), photo, None, GradeRule())
    assert "<span id='dr-grade'>0</span>" in by_argmax.summary and "(argmax)" in by_argmax.summary


def test_an_exported_folder_grades_by_the_head_and_rule_it_carries(models, photos, tmp_path):
    pytest.importorskip("onnxruntime")
    from dr_hf.export import export_onnx

    grader = load_grader(export_onnx(models["reg_b"], tmp_path / "onnx").folder)
    assert grader.head == "regression"
    assert grade_rule_for(grader) == GradeRule("thresholds", OWN_CUT_POINTS)
    result = predict(grader, [photos], progress=False)
    assert result.outputs.shape == (4, 1) and result.grades.tolist() == [1] * 4
    # the folder's own torch-free grader follows the same head and rule
    from dr_hf.inference.onnx_runtime import OnnxGrader

    rows = OnnxGrader(grader.folder).grade(sorted(photos.glob("*.png")))
    assert [row["grade"] for row in rows] == [1] * 4
    assert [row["label"] for row in rows] == ["Mild"] * 4
    assert [row["score"] for row in rows] == pytest.approx([1.75] * 4, abs=1e-5)
    assert {row["probabilities"] for row in rows} == {None}


def test_a_regression_models_operating_point_is_a_threshold_on_its_score(models, photos):
    saved = predict(models["reg_spec90"], [photos], progress=False)
    assert saved.operating_point == "spec90" and saved.referable_threshold == pytest.approx(1.6)
    # grade 1 by the cut points (1.75 < 1.8), referred by the score (1.75 >= 1.6)
    assert saved.grades.tolist() == [1] * 4 and saved.referable.tolist() == [True] * 4
    rows = saved.table()
    assert set(rows["referable_prob"]) == {""} and set(rows["referable"]) == {True}
    by_grade = predict(models["reg_spec90"], [photos], operating_point="argmax", progress=False)
    assert by_grade.referable.tolist() == [False] * 4  # the decided grade, 1, is below 2
    strict = predict(models["reg_spec90"], [photos], referable_threshold=1.8, progress=False)
    assert strict.referable.tolist() == [False] * 4

    from dr_hf.demo.grading import grade_photo

    photo = str(sorted(photos.glob("*.png"))[0])
    answer = grade_photo(load_grader(models["reg_spec90"], device="cpu"), photo, None)
    assert "refer when score &ge; <span id='dr-threshold'>1.6000</span>" in answer.summary
    assert "<b id='dr-referable'>yes</b>" in answer.summary


def test_ordinal_members_average_with_softmax_ones_and_never_with_regression(
    models, photos, tmp_path
):
    from dr_hf.models.graders import create_model

    model, processor = create_model(
        ModelArguments(model_name="test_resnet", head="ordinal"), image_size=32
    )
    classifier, bias = model.timm_model.get_classifier(), torch.tensor([2.0, 0.5, -1.0, -3.0])
    with torch.no_grad():
        classifier.weight.zero_()
        classifier.bias.copy_(bias)
    model.save_pretrained(tmp_path / "ordinal")
    processor.save_pretrained(tmp_path / "ordinal")
    above = np.cumprod(1 / (1 + np.exp(-bias.double().numpy())))  # P(grade > k), k = 0..3
    corn = np.concatenate([[1.0], above]) - np.concatenate([above, [0.0]])

    alone = predict(tmp_path / "ordinal", [photos], progress=False)
    np.testing.assert_allclose(alone.outputs, [corn] * 4, atol=1e-5)
    mixed = predict([tmp_path / "ordinal", models["a"]], [photos], progress=False)
    np.testing.assert_allclose(mixed.outputs, [(corn + PROBS_A) / 2] * 4, atol=1e-5)
    with pytest.raises(ValueError, match="cannot be averaged") as refused:
        predict([tmp_path / "ordinal", models["reg_a"]], [photos], cut_points="1,2,3,4")
    assert str(tmp_path / "ordinal") in str(refused.value)


def test_evaluate_command_line_takes_the_rule(models, synthetic_dir, tmp_path, capsys):
    from dr_hf.cli import evaluate_main

    common = ["--data", str(synthetic_dir), "--bootstrap", "0"]
    out = tmp_path / "given"
    code = evaluate_main(
        [
            "--model",
            str(models["a"]),
            *common,
            "--cut-points",
            "0.5,1.2,2.5,3.5",
            "--output",
            str(out),
        ]
    )
    assert code == 0 and "Grades by thresholds 0.5/1.2/2.5/3.5" in capsys.readouterr().out
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["grade_rule"]["cut_points"] == [0.5, 1.2, 2.5, 3.5]
    assert set(read_predictions(out / "predictions.csv")["grade"]) == {"2"}  # 1.3 >= 1.2
    code = evaluate_main(
        [
            "--model",
            str(models["reg_a"]),
            *common,
            "--grade-rule",
            "argmax",
            "--output",
            str(tmp_path / "reg"),
        ]
    )
    assert code == 2 and "no grade probabilities" in capsys.readouterr().err
