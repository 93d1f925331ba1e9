"""The predictions table: one schema for validation, evaluate and predict, written and read back
by one writer and one reader; bad tables are refused naming the file, line and column."""

import json
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from dr_hf.grading_rule import GradeRule, cut, expected_grade
from dr_hf.metrics import referable_scores, softmax
from dr_hf.predictions import (
    COLUMNS,
    PROB_COLUMNS,
    outputs_of,
    predictions_table,
    probabilities_of,
    read_predictions,
    rule_of,
    write_predictions,
)


def _probabilities(n, seed=0):
    return softmax(np.random.default_rng(seed).normal(size=(n, 5)) * 3)


def test_every_group_round_trips_through_csv(tmp_path):
    probs, tta = _probabilities(4), _probabilities(4, seed=1)
    verdicts = [
        SimpleNamespace(gradable=g, issues=i)
        for g, i in [(True, ()), (False, ("blurred", "dark")), (True, ()), (True, ())]
    ]
    table = predictions_table(
        ["a.png", "b.png", "c.png", "d.png"],
        probs,
        labels=[0, 2, 4, 1],
        tta=tta,
        referable=referable_scores(probs) >= 0.4,
        operating_point="threshold",
        referable_threshold=0.4,
        quality=verdicts,
        failures=[("broken.png", "UnidentifiedImageError: cannot identify")],
    )
    assert list(table.columns) == COLUMNS  # every group present, in the documented order
    write_predictions(table, tmp_path / "p.csv")
    back = read_predictions(tmp_path / "p.csv", require_labels=True)
    assert back["image"].tolist() == ["a.png", "b.png", "c.png", "d.png", "broken.png"]
    graded = back.iloc[:4]
    assert graded["true_grade"].tolist() == [0, 2, 4, 1]
    np.testing.assert_allclose(probabilities_of(graded), probs, atol=5e-7)
    np.testing.assert_allclose(probabilities_of(graded, "tta_"), tta, atol=5e-7)
    expected = [str(g) for g in probs.argmax(axis=1)]
    expected[1] = ""  # ungradable and not graded: no grade, no referable decision
    assert graded["grade"].tolist() == expected
    assert back["grade_name"][1] == "ungradable" and back["decision"][1] == "retake or refer"
    assert back["decision"].tolist() == ["graded", "retake or refer", "graded", "graded", ""]
    assert back["quality_issues"][1] == "blurred;dark" and back["gradable"][1] == "False"
    assert back["referable"][1] == "" and back["referable_threshold"][0] == "0.4"
    failed = back.iloc[4]
    assert failed["error"].startswith("UnidentifiedImageError") and failed["prob_0"] == ""


def test_ungradable_rows_are_graded_only_on_request():
    probs = _probabilities(2)
    verdicts = [SimpleNamespace(gradable=False, issues=("not_fundus",))] * 2
    default = predictions_table(["a", "b"], probs, referable=[True, False], quality=verdicts)
    assert default["grade"].tolist() == ["", ""] and default["referable"].tolist() == ["", ""]
    assert default["grade_name"].tolist() == ["ungradable"] * 2
    assert default["prob_3"].tolist() == np.round(probs[:, 3], 6).tolist()  # kept as they are
    research = predictions_table(
        ["a", "b"], probs, referable=[True, False], quality=verdicts, grade_ungradable=True
    )
    assert research["grade"].tolist() == probs.argmax(axis=1).tolist()
    assert research["referable"].tolist() == [True, False]
    assert research["decision"].tolist() == ["graded", "graded"]


def test_failed_rows_leave_the_graded_rows_as_written(tmp_path):
    probs = _probabilities(3)
    table = predictions_table(["a", "b", "c"], probs, failures=[("d", "file not found")])
    write_predictions(table, tmp_path / "p.csv")
    lines = (tmp_path / "p.csv").read_text().splitlines()
    header = "image,grade,grade_name,grade_rule,cut_points,score,prob_0"
    assert lines[0].startswith(header) and lines[0].endswith(",error")
    assert [line.split(",")[1] for line in lines[1:]] == [*map(str, probs.argmax(1)), ""]
    assert lines[-1].startswith("d,,,") and lines[-1].endswith(",file not found")


def test_json_formats_hold_the_same_rows(tmp_path):
    table = predictions_table(["x", "y"], _probabilities(2), labels=[1, 3])
    write_predictions(table, tmp_path / "p.json")
    write_predictions(table, tmp_path / "p.jsonl")
    as_array = json.loads((tmp_path / "p.json").read_text())
    as_lines = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert as_array == as_lines == table.to_dict(orient="records")
    assert as_array[0]["true_grade"] == 1 and isinstance(as_array[0]["grade"], int)
    with pytest.raises(ValueError, match="fmt='xml'"):
        write_predictions(table, tmp_path / "p.csv", fmt="xml")


def test_tables_of_earlier_versions_are_read_with_todays_names(tmp_path):
    old = pd.DataFrame({"image_id": ["a", "b"], "true_grade": [0, 3], "predicted_grade": [0, 2]})
    old[PROB_COLUMNS] = _probabilities(2)
    old.to_csv(tmp_path / "old.csv", index=False)
    table = read_predictions(tmp_path / "old.csv", require_labels=True)
    assert table["image"].tolist() == ["a", "b"] and table["grade"].tolist() == ["0", "2"]


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda t: t.drop(columns="prob_3"), r"bad.csv lacks the column\(s\) prob_3"),
        (lambda t: t.drop(columns="true_grade"), r"lacks the column\(s\) true_grade"),
        (lambda t: t.assign(prob_2=["0.1", "n/a"]), r"bad.csv, line 3 \(b\): prob_2 = 'n/a'"),
        (lambda t: t.assign(image=["a", "a"]), "lists images more than once: a"),
        (lambda t: t.iloc[:0], "lacks any image"),
    ],
)
def test_bad_tables_are_refused_naming_file_line_and_column(tmp_path, change, message):
    table = predictions_table(["a", "b"], _probabilities(2), labels=[0, 1])
    change(table).to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(ValueError, match=message):
        read_predictions(tmp_path / "bad.csv", require_labels=True)


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_a_regression_table_round_trips_and_its_grades_are_its_own_cells_rule(tmp_path, suffix):
    # a score 1e-7 below a cut point: both round to 1.500001, which would put it at the cut
    scores = np.array([[0.1], [1.5000006], [1.5000008], [3.9]])
    rule = GradeRule("thresholds", (0.5, 1.5000007, 2.5, 3.5))
    table = predictions_table(["a", "b", "c", "d"], scores, labels=[0, 1, 2, 4], rule=rule)
    assert table["grade"].tolist() == [0, 1, 2, 4]
    assert (table[[*PROB_COLUMNS, "referable_prob"]] == "").all(axis=None)
    write_predictions(table, tmp_path / f"p{suffix}")
    back = read_predictions(tmp_path / f"p{suffix}", require_labels=True)
    assert rule_of(back) == rule
    np.testing.assert_array_equal(outputs_of(back), scores)
    grades = [int(g) for g in back["grade"]]
    assert grades == cut(back["score"].astype(float), rule_of(back).cut_points).tolist()
    with pytest.raises(ValueError, match="regression model's"):
        probabilities_of(back)


def test_probability_rows_state_the_rule_and_their_expected_grade():
    probs = _probabilities(6, seed=3)
    rule = GradeRule("thresholds", (0.3, 1.1, 2.2, 3.3))
    table = predictions_table(list("abcdef"), probs, rule=rule)
    assert set(table["grade_rule"]) == {"thresholds"} and set(table["cut_points"]) == {
        "0.3;1.1;2.2;3.3"
    }
    np.testing.assert_allclose(table["score"].astype(float), expected_grade(probs))
    assert table["grade"].tolist() == cut(expected_grade(probs), rule.cut_points).tolist()
    argmax = predictions_table(list("abcdef"), probs)
    assert set(argmax["grade_rule"]) == {"argmax"} and set(argmax["cut_points"]) == {""}
    assert argmax["grade"].tolist() == probs.argmax(axis=1).tolist()
