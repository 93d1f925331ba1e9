"""`dr-hf demo`: the page's endpoints through gradio_client, its safe defaults, and the Space export.

The app runs on 127.0.0.1 in this process (a background server thread) with the tiny test_resnet
grader; its answers must be `predict()`'s for the same files.
"""

import csv
import importlib.util
import json
import re
import socket
import subprocess
import threading
from pathlib import Path

import httpx
import numpy as np
import pytest
import yaml
from PIL import Image

gradio = pytest.importorskip(
    "gradio", reason="the demo extra is not installed: pip install -e '.[demo]'"
)
from gradio_client import Client, handle_file  # noqa: E402

from dr_hf.cli import main as cli_main  # noqa: E402
from dr_hf.demo.app import DemoServer  # noqa: E402
from dr_hf.demo.cli import demo_parser  # noqa: E402
from dr_hf.demo.grading import NOTICE  # noqa: E402
from dr_hf.demo.space import export_space, pip_url  # noqa: E402
from dr_hf.grading_rule import cut  # noqa: E402
from dr_hf.inference import load_grader, predict  # noqa: E402


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def model_dir(trained_run) -> Path:
    return trained_run[0] / "best"


@pytest.fixture(scope="module")
def server(model_dir):
    with DemoServer(load_grader(model_dir, device="cpu")) as running:
        running.launch(port=free_port(), block=False, quiet=True)
        yield running


@pytest.fixture(scope="module")
def photos(synthetic_dir) -> list[Path]:
    return sorted((synthetic_dir / "train_images").glob("*.png"))[:2]


@pytest.fixture
def not_an_image(tmp_path) -> Path:
    path = tmp_path / "notes.png"
    path.write_text("this is a text file, not a photograph\n")
    return path


def expected_rows(model_dir, paths) -> dict[str, dict]:
    """`predict()`'s records for `paths`, by file name."""
    result = predict(model_dir, [str(p) for p in paths], device="cpu", progress=False)
    return {Path(row["image"]).name: row for row in result.records()}, result.columns


def test_defaults_are_safe():
    args = demo_parser().parse_args(["--model", "m"])
    assert (args.host, args.port, args.share, args.max_file_size) == (
        "127.0.0.1",
        7860,
        False,
        "20mb",
    )
    assert args.export_space is None


def test_server_binds_localhost_with_limits(server):
    assert server.url.startswith("http://127.0.0.1:")
    assert server.demo.max_file_size == 20 * 1024 * 1024
    assert server.demo._queue.max_size == 16
    assert Path(gradio.utils.get_upload_folder()).is_relative_to(server.workdir)
    config = Client(server.url, verbose=False).config
    assert NOTICE in str(config)
    (heatmap,) = [c for c in config["components"] if c["props"].get("elem_id") == "dr-heatmap"]
    assert heatmap["props"]["visible"] is True  # grad-cam is a dependency: the panel shows


def test_batch_table_is_predicts(server, model_dir, photos, not_an_image):
    client = Client(server.url, verbose=False)
    files = [handle_file(str(p)) for p in [*photos, not_an_image]]
    table, csv_path, message = client.predict(files, api_name="/grade_photos")
    expected, columns = expected_rows(model_dir, [*photos, not_an_image])
    assert table["headers"] == columns
    rows = {row[0]: dict(zip(table["headers"], row)) for row in table["data"]}
    assert set(rows) == {p.name for p in photos} | {not_an_image.name}
    for photo in photos:
        got, want = rows[photo.name], expected[photo.name]
        for column in ("grade", "grade_name", "prob_0", "prob_1", "prob_2", "prob_3", "prob_4",
                       "referable_prob", "referable", "operating_point", "referable_threshold"):  # fmt: skip
            assert got[column] == want[column], column
        assert got["error"] == ""
    bad = rows[not_an_image.name]
    assert "not an image" in bad["error"] and bad["grade"] == ""
    assert "Could not grade 1" in message and "notes.png" in message
    assert "/tmp/" not in bad["error"]  # the server's upload folder is not shown
    with open(csv_path, newline="") as f:
        saved = list(csv.DictReader(f))
    assert list(saved[0]) == columns
    assert [row["image"] for row in saved] == [row[0] for row in table["data"]]
    assert {row["image"]: row["prob_2"] for row in saved if not row["error"]} == {
        p.name: str(expected[p.name]["prob_2"]) for p in photos
    }


def test_single_photo_and_a_bad_file(server, model_dir, photos, not_an_image):
    client = Client(server.url, verbose=False)
    summary, plot, view, heatmap = client.predict(
        handle_file(str(photos[0])), api_name="/grade_photo"
    )
    with Image.open(heatmap) as overlay:  # the Grad-CAM overlay of the graded photograph
        side = json.loads((model_dir / "preprocessor_config.json").read_text())["size"]["height"]
        assert overlay.size == (side, side) and len(np.unique(np.asarray(overlay))) > 10
    want = expected_rows(model_dir, photos[:1])[0][photos[0].name]
    assert f"<span id='dr-grade'>{want['grade']}</span>" in summary
    for grade in range(5):
        assert f"id='dr-prob-{grade}'>{want[f'prob_{grade}']:.4f}<" in summary
    verdict = "gradable" if want["gradable"] else "ungradable"  # predict assesses by default
    assert f"id='dr-gradable'>{verdict}<" in summary
    assert [row[1] for row in plot["data"]] == [want[f"prob_{g}"] for g in range(5)]
    assert Path(view).is_file()
    summary, plot, view, heatmap = client.predict(
        handle_file(str(not_an_image)), api_name="/grade_photo"
    )
    assert "Could not grade notes.png" in summary and "is not an image" in summary
    assert plot is None and view is None and heatmap is None
    summary, *_ = client.predict(handle_file(str(photos[1])), api_name="/grade_photo")
    assert "id='dr-grade'" in summary  # still serving after the failure


def test_gradeability_is_shown(server, model_dir, tmp_path):
    dark = tmp_path / "dark.png"
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(dark)
    summary, *_ = Client(server.url, verbose=False).predict(
        handle_file(str(dark)), api_name="/grade_photo"
    )
    want = expected_rows(model_dir, [dark])[0]["dark.png"]
    assert want["gradable"] is False and want["quality_issues"]
    assert "id='dr-gradable'>ungradable<" in summary
    for issue in want["quality_issues"].split(";"):
        assert issue in summary


def test_two_users_at_once(server, photos):
    answers = []

    def user(photo):
        client = Client(server.url, verbose=False)
        answers.append(client.predict(handle_file(str(photo)), api_name="/grade_photo")[0])

    threads = [threading.Thread(target=user, args=(photo,)) for photo in photos]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    shown = sorted(re.search("id='dr-image'>([^<]+)<", answer).group(1) for answer in answers)
    assert shown == sorted(photo.name for photo in photos)


def test_an_answer_is_never_rewritten_under_a_download(server, photos):
    """A second answer for the same photograph hands out the first answer's image files as they
    are (same file, same modification time) with a fresh ctime for the hourly sweep: a file
    rewritten in place while another user downloads it ends short of its Content-Length."""
    client = Client(server.url, verbose=False)
    _, _, view, heatmap = client.predict(handle_file(str(photos[0])), api_name="/grade_photo")
    shown = {Path(view).read_bytes(), Path(heatmap).read_bytes()}
    served = [p for p in (server.workdir / "uploads").rglob("*.png") if p.read_bytes() in shown]
    assert len(served) == 2  # the model's view and the Grad-CAM overlay, once each
    before = {path: path.stat() for path in served}
    _, _, view, heatmap = client.predict(handle_file(str(photos[0])), api_name="/grade_photo")
    assert {Path(view).read_bytes(), Path(heatmap).read_bytes()} == shown
    for path, old in before.items():
        new = path.stat()
        assert (new.st_ino, new.st_size, new.st_mtime_ns) == (
            old.st_ino,
            old.st_size,
            old.st_mtime_ns,
        ), f"{path} was rewritten"
        assert new.st_ctime_ns > old.st_ctime_ns, f"{path} would be swept as unused"


def test_uploads_are_limited_and_kept_in_the_demo_folder(server):
    upload = server.url.rstrip("/") + "/gradio_api/upload"
    big = {"files": ("big.png", b"\0" * (21 * 1024 * 1024), "image/png")}
    refused = httpx.post(upload, files=big, timeout=60)
    assert refused.status_code == 413
    small = httpx.post(upload, files={"files": ("small.png", b"\0" * 1000, "image/png")})
    assert small.status_code == 200
    assert Path(small.json()[0]).is_relative_to(server.workdir)


def git(*args) -> str | None:
    done = subprocess.run(
        ["git", "-C", str(Path(__file__).parent), *args], capture_output=True, text=True
    )
    return done.stdout.strip() if done.returncode == 0 else None


def test_pip_url():
    assert pip_url("git@github.com:owner/dr_hf.git") == "git+ssh://git@github.com/owner/dr_hf.git"
    assert pip_url("https://user:token@github.com/owner/dr_hf.git") == (
        "git+https://github.com/owner/dr_hf.git"
    )
    assert pip_url("/srv/git/dr_hf.git") is None


def test_export_space_serves_the_same_page(model_dir, photos, tmp_path, monkeypatch):
    space = export_space(model_dir, tmp_path / "space")
    remote, head = git("remote", "get-url", "origin"), git("rev-parse", "HEAD")
    pinned = bool(remote and pip_url(remote))
    wheels = {p.name for p in space.glob("dr_hf-*.whl")}
    assert len(wheels) == (0 if pinned else 1)  # no remote to pin: dr_hf's own wheel
    assert {p.name for p in space.iterdir()} == {
        "app.py", "requirements.txt", "README.md", "model", *wheels
    }  # fmt: skip
    assert {p.name for p in (space / "model").iterdir()} == {p.name for p in model_dir.iterdir()}
    front = yaml.safe_load((space / "README.md").read_text().split("---")[1])
    assert front["sdk"] == "gradio" and front["sdk_version"] == gradio.__version__
    assert front["app_file"] == "app.py" and front["title"]
    assert NOTICE in (space / "README.md").read_text()
    requirements = (space / "requirements.txt").read_text().splitlines()
    assert f"gradio=={gradio.__version__}" in requirements
    dr_hf_line = requirements[0]
    if pinned:
        assert dr_hf_line == f"dr-hf @ {pip_url(remote)}@{head}"
    else:
        assert dr_hf_line == f"./{wheels.pop()}"
    spec = importlib.util.spec_from_file_location("space_app", space / "app.py")
    app = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(app)
    monkeypatch.setenv("GRADIO_SERVER_PORT", str(free_port()))
    running = app.main(block=False)
    try:
        assert running.url.startswith("http://127.0.0.1:")
        summary, *_ = Client(running.url, verbose=False).predict(
            handle_file(str(photos[0])), api_name="/grade_photo"
        )
        want = expected_rows(model_dir, photos[:1])[0][photos[0].name]
        assert f"id='dr-prob-0'>{want['prob_0']:.4f}<" in summary
    finally:
        running.close()
    assert not running.workdir.exists()


def test_cli_exports_and_refuses_a_used_folder(model_dir, tmp_path, capsys):
    target = tmp_path / "space"
    assert cli_main(["demo", "--model", str(model_dir), "--export-space", str(target)]) == 0
    assert (target / "app.py").is_file()
    assert cli_main(["demo", "--model", str(model_dir), "--export-space", str(target)]) == 2
    assert "not empty" in capsys.readouterr().err
    assert cli_main(["demo", "--model", str(tmp_path / "missing"), "--port", "0"]) == 2


def test_an_exported_space_grades_by_the_rule_the_demo_was_given(
    model_dir, photos, tmp_path, monkeypatch, capsys
):
    plain, chosen, refused = tmp_path / "plain", tmp_path / "chosen", tmp_path / "refused"
    demo = ["demo", "--model", str(model_dir), "--export-space"]
    assert cli_main([*demo, str(plain)]) == 0
    assert cli_main([*demo, str(chosen), "--cut-points", "0.6,1.7,2.8,3.9"]) == 0
    assert cli_main([*demo, str(refused), "--cut-points", "1,2"]) == 2  # four are needed
    assert "--cut-points '1,2'" in capsys.readouterr().err and not refused.exists()
    assert "GRADE_RULE = None" in (plain / "app.py").read_text()
    assert "CUT_POINTS = None" in (plain / "app.py").read_text()
    spec = importlib.util.spec_from_file_location("chosen_app", chosen / "app.py")
    app = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(app)
    assert (app.GRADE_RULE, app.CUT_POINTS) == (None, "0.6,1.7,2.8,3.9")
    monkeypatch.setenv("GRADIO_SERVER_PORT", str(free_port()))
    running = app.main(block=False)
    try:
        summary, *_ = Client(running.url, verbose=False).predict(
            handle_file(str(photos[0])), api_name="/grade_photo"
        )
    finally:
        running.close()
    assert "cut points 0.6/1.7/2.8/3.9 on the expected grade" in summary


@pytest.fixture(scope="module")
def not_fundus(tmp_path_factory) -> list[Path]:
    """A person and a cat (scikit-image's photographs): nothing a grader may grade."""
    from skimage import data

    folder = tmp_path_factory.mktemp("not_fundus")
    Image.fromarray(data.astronaut()).save(folder / "astronaut.png")
    Image.fromarray(data.chelsea()).save(folder / "chelsea.png")
    return [folder / "astronaut.png", folder / "chelsea.png"]


def test_a_photograph_that_is_not_a_fundus_is_answered_retake_or_refer(
    server, model_dir, not_fundus
):
    client = Client(server.url, verbose=False)
    expected, _ = expected_rows(model_dir, not_fundus)
    for photo in not_fundus:
        summary, plot, view, heatmap = client.predict(
            handle_file(str(photo)), api_name="/grade_photo"
        )
        headline = re.search("<h3 id='dr-headline'>(.*?)</h3>", summary).group(1)
        assert "ungradable" in headline and "retake" in headline and "refer" in headline
        assert "Grade" not in headline and "id='dr-grade'" not in summary
        assert "id='dr-referable'>not decided<" in summary
        # the model's output is kept, in a panel that starts collapsed
        panel = re.search("<details id='dr-model-output'>(.*)</details>", summary).group(1)
        want = expected[photo.name]
        for grade in range(5):
            assert f"id='dr-prob-{grade}'>{want[f'prob_{grade}']:.4f}<" in panel
        model_grade = int(np.argmax([want[f"prob_{g}"] for g in range(5)]))
        if want["grade_rule"] == "thresholds":  # the saved rule: cut points on the score
            cut_points = [float(c) for c in want["cut_points"].split(";")]
            model_grade = int(cut([float(want["score"])], cut_points)[0])
        assert f"id='dr-model-grade'>{model_grade}<" in panel
        assert "<details id='dr-model-output' open" not in summary
        assert plot is None and heatmap is None and Path(view).is_file()

    table, _, message = client.predict(
        [handle_file(str(p)) for p in not_fundus], api_name="/grade_photos"
    )
    rows = {row[0]: dict(zip(table["headers"], row)) for row in table["data"]}
    assert set(rows) == {p.name for p in not_fundus} and "Graded 2" in message
    for name, row in rows.items():
        assert (row["grade"], row["grade_name"], row["referable"]) == ("", "ungradable", "")
        assert row["decision"] == "retake or refer" and row["gradable"] in (False, "False")
        assert row["prob_0"] == expected[name]["prob_0"] and row["referable_prob"] != ""
