"""`dr-hf predict` over an archive: rows written batch by batch in input order, and `--resume` of a
killed run ending in the uninterrupted run's file, byte for byte."""

import csv
import io
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from dr_hf.cli import predict_main
from dr_hf.predictions import read_predictions


@pytest.fixture(scope="module")
def archive(synthetic_dir, tmp_path_factory) -> Path:
    """The 60 synthetic photographs (64 px) in a folder, with two files that are not images."""
    folder = tmp_path_factory.mktemp("archive") / "photos"
    shutil.copytree(synthetic_dir / "train_images", folder)
    (folder / "000_garbage.png").write_bytes(b"not a PNG")
    (folder / "zzz_notes.jpg").write_text("a text file\n")
    return folder


def run(model, archive, output, *flags) -> int:
    argv = [str(archive), str(archive.parent / "missing.png"), "--model", str(model)]
    return predict_main([*argv, "--output", str(output), "--batch-size", "8", *flags])


@pytest.fixture(scope="module")
def uninterrupted(trained_run, archive, tmp_path_factory) -> dict[str, bytes]:
    """The files of an uninterrupted run, as CSV and as JSON Lines, on one thread as the tests
    run (the float32 sums of two threads may differ in their last bit)."""
    folder = tmp_path_factory.mktemp("whole")
    files, threads = {}, torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for fmt in ("csv", "jsonl"):
            assert run(trained_run[0] / "best", archive, folder / f"whole.{fmt}") == 1  # 3 failed
            files[fmt] = (folder / f"whole.{fmt}").read_bytes()
    finally:
        torch.set_num_threads(threads)
    return files


def test_rows_are_in_input_order_with_failures_in_place(uninterrupted, archive):
    lines = uninterrupted["csv"].decode().splitlines()
    images = [line.split(",")[0] for line in lines[1:]]
    folder = sorted(str(p) for p in archive.iterdir())
    assert images == [*folder, str(archive.parent / "missing.png")]
    table = read_predictions_from(uninterrupted["csv"])
    failed = table[table["error"] != ""]["image"].map(lambda name: Path(name).name).tolist()
    assert failed == ["000_garbage.png", "zzz_notes.jpg", "missing.png"]


def read_predictions_from(data: bytes, suffix: str = ".csv"):
    import tempfile

    with tempfile.NamedTemporaryFile(suffix=suffix) as f:
        f.write(data)
        f.flush()
        return read_predictions(f.name)


@pytest.mark.parametrize(
    "fmt, rows, torn",
    [("csv", 0, 0), ("csv", 1, 30), ("csv", 21, 45), ("csv", 55, 0), ("jsonl", 30, 100)],
)
def test_a_killed_run_resumed_equals_an_uninterrupted_one(
    trained_run, archive, uninterrupted, tmp_path, fmt, rows, torn
):
    """The file as a kill leaves it: its first `rows` rows (after the CSV header), then `torn`
    bytes of the next one."""
    whole = uninterrupted[fmt]
    lines = whole.splitlines(keepends=True)
    kept = lines[: rows + (fmt == "csv")]
    partial = tmp_path / f"partial.{fmt}"
    partial.write_bytes(b"".join(kept) + lines[len(kept)][:torn])
    assert run(trained_run[0] / "best", archive, partial, "--resume") == 1
    assert partial.read_bytes() == whole


@pytest.mark.slow
def test_a_run_killed_by_a_signal_resumes_to_the_same_file(
    trained_run, archive, uninterrupted, tmp_path
):
    output = tmp_path / "killed.csv"
    argv = [sys.executable, "-m", "dr_hf.cli", "predict", str(archive)]
    argv += [str(archive.parent / "missing.png"), "--model", str(trained_run[0] / "best")]
    argv += ["--output", str(output), "--batch-size", "8", "--num-workers", "0", "--device", "cpu"]
    env = os.environ | {"PYTHONPATH": str(Path(__file__).parents[1]), "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(argv, env=env, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if output.is_file() and output.read_bytes().count(b"\n") >= 2:
            process.send_signal(signal.SIGKILL)
            break
        time.sleep(0.005)
    process.wait(timeout=60)
    killed, whole = output.read_bytes(), uninterrupted["csv"]
    assert process.returncode == -signal.SIGKILL and len(killed) < len(whole)
    assert whole.startswith(killed[: killed.rfind(b"\n") + 1])  # its rows are the first rows
    assert predict_main(
        [str(archive), str(archive.parent / "missing.png"), "--model", str(trained_run[0] / "best")]
        + ["--output", str(output), "--batch-size", "8", "--resume"]
    ) in (0, 1)
    assert output.read_bytes() == uninterrupted["csv"]


def test_resume_refuses_what_it_cannot_continue(
    trained_run, archive, uninterrupted, tmp_path, capsys
):
    best = trained_run[0] / "best"
    argv = [str(archive), "--model", str(best), "--resume"]
    assert predict_main(argv) == 2
    assert "--resume needs the --output file" in capsys.readouterr().err
    assert predict_main([*argv, "--output", str(tmp_path / "none.csv")]) == 2
    assert "none.csv does not exist: nothing to resume" in capsys.readouterr().err
    assert predict_main([*argv, "--output", str(tmp_path / "p.json")]) == 2
    assert "cannot be resumed" in capsys.readouterr().err

    rows = list(csv.reader(io.StringIO(uninterrupted["csv"].decode())))[:9]
    header = rows[0]
    other_schema = tmp_path / "other_schema.csv"  # a table without the decision column
    write_rows(
        other_schema, [[c for c, name in zip(row, header) if name != "decision"] for row in rows]
    )
    assert predict_main([*argv, "--output", str(other_schema)]) == 2
    err = capsys.readouterr().err
    assert "other_schema.csv has the columns" in err and "other options" in err

    other_model = tmp_path / "other_model.csv"  # the probabilities another model would give
    first = next(row for row in rows[1:] if row[header.index("error")] == "")
    p0, p4 = header.index("prob_0"), header.index("prob_4")
    first[p0], first[p4] = first[p4], first[p0]
    write_rows(other_model, rows)
    before = other_model.read_bytes()
    assert predict_main([*argv, "--output", str(other_model)]) == 2
    assert "written by another model or with other settings" in capsys.readouterr().err
    assert other_model.read_bytes() == before  # nothing written is lost


def write_rows(path: Path, rows: list[list[str]]) -> None:
    with open(path, "w", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows(rows)


def test_predict_stream_yields_predicts_rows_batch_by_batch(trained_run, archive):
    import pandas as pd

    from dr_hf.inference import predict, predict_stream

    inputs = [archive, archive.parent / "missing.png"]
    best = trained_run[0] / "best"
    parts = list(predict_stream(best, inputs, batch_size=16, num_workers=0, progress=False))
    assert [len(part.table()) for part in parts] == [16, 16, 16, 15]
    whole = predict(best, inputs, batch_size=16, num_workers=0, progress=False).table()
    pd.testing.assert_frame_equal(pd.concat([p.table() for p in parts], ignore_index=True), whole)


def test_resume_keeps_the_ungradable_policy_of_the_file(
    trained_run, synthetic_dir, tmp_path, capsys
):
    from PIL import Image
    from skimage import data

    folder = tmp_path / "mixed"
    folder.mkdir()
    for photo in sorted((synthetic_dir / "train_images").glob("*.png"))[:2]:
        shutil.copy(photo, folder / photo.name)
    Image.fromarray(data.astronaut()).save(folder / "astronaut.png")
    output = tmp_path / "mixed.csv"
    argv = [str(folder), "--model", str(trained_run[0] / "best"), "--output", str(output)]
    assert predict_main([*argv, "--batch-size", "1", "--grade-ungradable"]) == 0
    assert predict_main([*argv, "--batch-size", "1", "--resume"]) == 2
    assert "written with --grade-ungradable: resume it with that flag" in capsys.readouterr().err
    assert predict_main([*argv, "--batch-size", "1", "--resume", "--grade-ungradable"]) == 0
