"""Prediction with trained tiny models: every model kind, corrupt files, outputs, TTA, notebook API."""

import csv
import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from dr_hf.cli import main as cli_main
from dr_hf.cli import predict_main
from dr_hf.grades import GRADE_NAMES
from dr_hf.inference import PROB_COLUMNS, PredictionResult, grade_batch, load_grader, predict
from dr_hf.models.graders import load_trained_model

torch.set_num_threads(1)


def model_folder(kind: str, trained_run, trained_lora_run):
    """best/ of the full run, its best checkpoint-N, or the LoRA adapter's best/."""
    if kind == "lora":
        return trained_lora_run[0] / "best"
    output_dir = trained_run[0]
    if kind == "checkpoint":
        return json.loads((output_dir / "eval_results.json").read_text())["best_checkpoint"]
    return output_dir / "best"


@pytest.fixture
def image_folder(synthetic_dir, tmp_path):
    """Six synthetic photographs in a folder of their own."""
    folder = tmp_path / "photos"
    folder.mkdir()
    for path in sorted((synthetic_dir / "train_images").glob("*.png"))[:6]:
        shutil.copy(path, folder / path.name)
    return folder


@pytest.mark.parametrize("kind", ["full", "checkpoint", "lora"])
def test_every_model_kind_grades_a_folder(kind, trained_run, trained_lora_run, image_folder):
    folder = model_folder(kind, trained_run, trained_lora_run)
    result = predict(folder, [image_folder], operating_point="argmax")
    assert len(result.names) == 6 and not result.failures
    assert result.probabilities.shape == (6, 5)
    assert np.allclose(result.probabilities.sum(axis=1), 1.0, atol=1e-5)
    rows = result.records()
    assert [row["grade_name"] for row in rows] == [GRADE_NAMES[g] for g in result.grades]
    assert [row["referable"] for row in rows] == [bool(g >= 2) for g in result.grades]


def test_folder_with_corrupt_files_grades_the_others_and_reports_them(
    trained_run, image_folder, tmp_path, capsys
):
    (image_folder / "garbage.png").write_bytes(b"this is not a PNG")
    good = (image_folder / sorted(p.name for p in image_folder.glob("*.png"))[0]).read_bytes()
    (image_folder / "truncated.png").write_bytes(good[: len(good) // 2])
    out = tmp_path / "preds.csv"
    missing = tmp_path / "nowhere.png"

    code = predict_main(
        [
            "--model",
            str(trained_run[0] / "best"),
            str(image_folder),
            str(missing),
            "--output",
            str(out),
        ]
    )

    assert code == 1
    rows = list(csv.DictReader(out.open()))
    graded = [row for row in rows if not row["error"]]
    failed = {row["image"].rsplit("/", 1)[-1]: row["error"] for row in rows if row["error"]}
    assert len(graded) == 6 and all(row["grade"] in "01234" for row in graded)
    assert set(failed) == {"garbage.png", "truncated.png", "nowhere.png"}
    assert "not found" in failed["nowhere.png"]
    err = capsys.readouterr().err
    assert "garbage.png" in err and "truncated.png" in err and "3 could not be graded" in err


def test_jsonl_output_and_csv_on_stdout(trained_run, image_folder, tmp_path, capsys):
    best = str(trained_run[0] / "best")
    assert (
        predict_main(["--model", best, str(image_folder), "--output", str(tmp_path / "p.jsonl")])
        == 0
    )
    lines = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert len(lines) == 6
    assert set(PROB_COLUMNS) <= set(lines[0]) and lines[0]["error"] == ""
    assert sum(lines[0][c] for c in PROB_COLUMNS) == pytest.approx(1.0, abs=1e-4)

    capsys.readouterr()
    assert predict_main(["--model", best, str(image_folder), "--batch-size", "4"]) == 0
    stdout = capsys.readouterr().out.splitlines()
    header = "image,grade,grade_name,decision,grade_rule,cut_points,score,prob_0"
    assert stdout[0].startswith(header) and len(stdout) == 7


def test_json_output_is_one_json_array(trained_run, image_folder, tmp_path):
    best = str(trained_run[0] / "best")
    (image_folder / "garbage.png").write_bytes(b"this is not a PNG")
    assert predict_main(["--model", best, str(image_folder), "--output", str(tmp_path / "p.json")])
    rows = json.loads((tmp_path / "p.json").read_text())  # JSON Lines would not parse here
    assert isinstance(rows, list) and len(rows) == 7
    # rows in input order (the folder's, sorted), the failure in its place
    assert [row["image"] for row in rows] == sorted(str(p) for p in image_folder.glob("*.png"))
    assert "garbage" in rows[0]["image"] and rows[0]["error"]
    assert [row["error"] for row in rows[1:]] == [""] * 6
    assert sum(rows[1][c] for c in PROB_COLUMNS) == pytest.approx(1.0, abs=1e-4)
    # --format wins over the suffix.
    argv = ["--model", best, str(image_folder), "--output", str(tmp_path / "p.json")]
    predict_main(argv + ["--format", "jsonl"])
    lines = (tmp_path / "p.json").read_text().splitlines()
    assert len(lines) == 7 and all(json.loads(line)["image"] for line in lines)


class CountingArray(np.ndarray):
    """Probabilities that count the argmax calls made on them."""

    argmax_calls = 0

    def argmax(self, *args, **kwargs):
        CountingArray.argmax_calls += 1
        return np.asarray(self).argmax(*args, **kwargs)


def test_records_take_the_grades_once_not_once_per_row():
    probabilities = np.random.default_rng(0).dirichlet(np.ones(5), 2000)
    counting = probabilities.view(CountingArray)
    result = PredictionResult([f"image_{i}" for i in range(2000)], counting)
    CountingArray.argmax_calls = 0
    rows = result.records()
    assert CountingArray.argmax_calls <= 2  # was one per row: quadratic in the number of images
    assert [row["grade"] for row in rows] == probabilities.argmax(axis=1).tolist()
    assert [row["referable"] for row in rows] == (probabilities.argmax(axis=1) >= 2).tolist()


def test_usage_errors_exit_with_2(trained_run, image_folder, tmp_path):
    assert predict_main([str(image_folder)]) == 2  # no --model
    assert cli_main(["predict", "--model", str(tmp_path), str(image_folder)]) == 2
    assert predict_main(["--model", str(tmp_path / "no_model"), str(image_folder)]) == 2
    best = str(trained_run[0] / "best")
    assert predict_main(["--model", best, str(image_folder), "--batch-size", "0"]) == 2


def test_notebook_api_takes_loaded_models_and_pil_images(trained_run, image_folder):
    best = trained_run[0] / "best"
    files = sorted(image_folder.glob("*.png"))
    from_path = predict(best, files, batch_size=4)
    images = [Image.open(path).convert("RGB") for path in files]
    # A loaded model gets its size and normalisation from its config, crop on: as trained here.
    in_memory = predict(load_trained_model(best), images)
    assert in_memory.names == [f"image_{i}" for i in range(len(files))]
    np.testing.assert_allclose(in_memory.probabilities, from_path.probabilities, atol=1e-6)

    strict = predict(best, files, referable_threshold=0.0)
    assert strict.referable.all()


def test_tta_averages_the_flipped_and_rotated_views(trained_run):
    grader = load_grader(trained_run[0] / "best", device="cpu")
    pixels = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    plain, averaged = grade_batch(grader, pixels, tta=True)
    with torch.no_grad():
        views = [
            pixels,
            pixels.flip(-1),
            pixels.flip(-2),
            pixels.rot90(1, (-2, -1)),
        ]
        probs = [grader.model(pixel_values=v).logits.softmax(-1) for v in views]
    torch.testing.assert_close(plain, probs[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(averaged, torch.stack(probs).mean(0), atol=1e-5, rtol=0)
    assert not torch.allclose(plain, averaged)
    assert grade_batch(grader, pixels)[1] is None


@pytest.fixture
def not_fundus(tmp_path):
    """Two photographs that are not of a retina: a person and a cat (scikit-image's)."""
    from skimage import data

    folder = tmp_path / "not_fundus"
    folder.mkdir()
    Image.fromarray(data.astronaut()).save(folder / "astronaut.png")
    Image.fromarray(data.chelsea()).save(folder / "chelsea.png")
    return folder


def test_a_photograph_that_is_not_a_fundus_gets_no_grade_unless_asked(trained_run, not_fundus):
    best = trained_run[0] / "best"
    result = predict(best, [not_fundus], device="cpu", progress=False)
    rows = result.records()
    assert [row["image"].rsplit("/", 1)[-1] for row in rows] == ["astronaut.png", "chelsea.png"]
    for row, probabilities in zip(rows, result.probabilities):
        assert row["gradable"] is False and "not_fundus" in row["quality_issues"]
        assert (row["grade"], row["grade_name"], row["referable"]) == ("", "ungradable", "")
        assert row["decision"] == "retake or refer" and row["error"] == ""
        # the model's raw probabilities stay in the row
        assert [row[c] for c in PROB_COLUMNS] == np.round(probabilities, 6).tolist()
        assert row["referable_prob"] == pytest.approx(probabilities[2:].sum(), abs=2e-6)
    research = predict(best, [not_fundus], device="cpu", progress=False, grade_ungradable=True)
    for row, grade in zip(research.records(), research.grades):
        assert row["grade"] == grade and row["grade_name"] == GRADE_NAMES[grade]
        assert row["referable"] in (True, False) and row["decision"] == "graded"
        assert row["gradable"] is False  # graded on request, still flagged
