"""The one inference path: models are named, never guessed (`--model` repeats, `--models-file`
lists them, images stay images); one grader is an ensemble of one; a labelled set is graded
whole or not at all."""

import csv
import json
import os
import shutil

import numpy as np
import pytest
import torch

from dr_hf.cli import evaluate_main, predict_main
from dr_hf.evaluation.evaluate import check_graded
from dr_hf.inference import Grading, grade, load_grader, load_graders, named_models, predict

torch.set_num_threads(1)


@pytest.fixture
def models(trained_run):
    """best/ of the tiny run and its best checkpoint-N."""
    output_dir = trained_run[0]
    checkpoint = json.loads((output_dir / "eval_results.json").read_text())["best_checkpoint"]
    return [str(output_dir / "best"), str(checkpoint)]


@pytest.fixture
def photos(synthetic_dir, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for path in sorted((synthetic_dir / "train_images").glob("*.png"))[:4]:
        shutil.copy(path, folder / path.name)
    return folder


def probabilities(path) -> dict[str, list[float]]:
    rows = list(csv.DictReader(open(path)))
    return {row["image"]: [float(row[f"prob_{g}"]) for g in range(5)] for row in rows}


def test_a_models_file_names_the_same_ensemble_as_repeated_flags(models, photos, tmp_path):
    listing = tmp_path / "lists" / "models.txt"
    listing.parent.mkdir()
    relative = [os.path.relpath(path, listing.parent) for path in models]  # from the file's folder
    assert not relative[0].startswith("/")
    listing.write_text(f"# the two members\n{relative[0]}\n\n{relative[1]}  # checkpoint\n")
    flags = tmp_path / "flags.csv"
    listed = tmp_path / "listed.csv"
    argv = [str(photos), "--output"]
    assert predict_main(["--model", models[0], "--model", models[1], *argv, str(flags)]) == 0
    assert predict_main(["--models-file", str(listing), *argv, str(listed)]) == 0
    assert probabilities(flags) == probabilities(listed)
    assert [path.resolve() for path in named_models([], listing)] == [
        path.resolve() for path in named_models(models)
    ]


def test_images_are_never_taken_for_models_nor_models_for_images(models, photos, tmp_path, capsys):
    photo = str(sorted(photos.glob("*.png"))[0])
    # The old `--model A B photo` form: B is now an input, and a model folder is no image.
    assert predict_main(["--model", models[0], models[1], photo]) == 2
    assert models[1] in capsys.readouterr().err
    # A photograph given as a model is an error naming it, not an image to grade.
    assert predict_main(["--model", photo, str(photos)]) == 2
    err = capsys.readouterr().err
    assert photo in err and "Not a model folder" in err
    missing = str(tmp_path / "typo_best")
    assert evaluate_main(["--model", missing, "--data", str(photos)]) == 2
    assert missing in capsys.readouterr().err
    # --images and positional names are the same inputs.
    out = tmp_path / "p.csv"
    assert predict_main(["--model", models[0], "--images", photo, "--output", str(out)]) == 0
    assert list(probabilities(out)) == [photo]


def test_one_grader_is_an_ensemble_of_one(models, photos):
    alone = predict(models[0], [photos])
    listed = predict(load_graders(models[:1]), [photos])
    assert listed.names == alone.names
    np.testing.assert_array_equal(listed.probabilities, alone.probabilities)
    assert listed.records() == alone.records()
    graded = grade(load_graders(models), [photos])
    assert len(graded.members) == 2 and graded.names == alone.names
    np.testing.assert_array_equal(graded.members[0]["plain"], alone.probabilities)


def test_a_prepared_source_skips_the_steps_already_done(models):
    grader = load_grader(models[0], device="cpu")
    assert grader.processor.crop_fov
    prepared = grader.for_prepared({"crop": True, "ben_graham": False})
    assert not prepared.processor.crop_fov and grader.processor.crop_fov  # the original is kept
    assert prepared.model is grader.model
    assert grader.for_prepared(None) is grader


def test_evaluation_refuses_a_set_with_images_it_could_not_grade():
    members = [{"plain": np.full((1, 5), 0.2, np.float32)}]
    whole = Grading(["a.png"], members, [])
    assert check_graded(whole) is whole
    partial = Grading(["a.png"], members, [("b.png", "OSError: truncated")])
    with pytest.raises(ValueError, match="b.png: OSError: truncated"):
        check_graded(partial)
