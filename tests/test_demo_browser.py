"""`dr-hf demo` in a real headless browser: upload through the page, read the answer off it.

Chromium is Debian's (`apt-get install chromium`), driven by Playwright (which cannot fetch its
own browser offline). A screenshot of the answered page is saved to `$DR_HF_TEST_ARTIFACTS`
(default: the test's tmp_path) and to /tmp/demo_screenshot.png.
"""

import csv
import os
import shutil
import socket
from pathlib import Path

import pytest
from PIL import Image

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SCREENSHOT = Path("/tmp/demo_screenshot.png")

sync_api = pytest.importorskip(
    "playwright.sync_api",
    reason="Playwright is not installed: pip install -e '.[demo]' (browser test skipped)",
)
if not Path(CHROMIUM).is_file():
    pytest.skip(
        f"chromium not found ({CHROMIUM}): apt-get install chromium (browser test skipped)",
        allow_module_level=True,
    )

from dr_hf.cli import predict_main  # noqa: E402
from dr_hf.demo.app import DemoServer  # noqa: E402
from dr_hf.demo.grading import NOTICE, PRECISION  # noqa: E402
from dr_hf.inference import load_grader  # noqa: E402

pytestmark = pytest.mark.slow  # a browser and a served page: several seconds
TIMEOUT_MS = 30_000


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server(trained_run):
    with DemoServer(load_grader(trained_run[0] / "best", device="cpu")) as running:
        running.launch(port=free_port(), block=False, quiet=True)
        yield running


@pytest.fixture
def page(server):
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.set_default_timeout(TIMEOUT_MS)
            page.goto(server.url)
            yield page
        finally:
            browser.close()


def upload(page, path: Path) -> None:
    """Clear the photograph field if it holds a file, then upload `path` through it."""
    clear = page.locator("#dr-photo button[aria-label='Clear']")
    if clear.count():
        clear.click()
        page.wait_for_selector("#dr-photo input[type=file]", state="attached")
    page.locator("#dr-photo input[type=file]").set_input_files(str(path))


def predicted_row(trained_run, photo: Path, tmp_path: Path) -> dict:
    """`dr-hf predict`'s CSV row for `photo`."""
    output = tmp_path / "predict.csv"
    assert predict_main([str(photo), "--model", str(trained_run[0] / "best"), "--output", str(output), "--device", "cpu"]) == 0  # fmt: skip
    with open(output, newline="") as f:
        (row,) = csv.DictReader(f)
    return row


def shown(page, element_id: str) -> str:
    return page.locator(f"#{element_id}").inner_text().strip()


def test_page_grades_as_dr_hf_predict(page, trained_run, synthetic_dir, tmp_path):
    photos = sorted((synthetic_dir / "train_images").glob("*.png"))
    first, second = photos[3], photos[7]
    page.wait_for_selector("#dr-photo input[type=file]", state="attached")
    assert page.get_by_text(NOTICE).first.is_visible()

    upload(page, first)
    page.wait_for_selector(f"#dr-image:text-is('{first.name}')")
    want = predicted_row(trained_run, first, tmp_path)
    assert shown(page, "dr-grade") == want["grade"]
    assert shown(page, "dr-grade-name") == want["grade_name"]
    for grade in range(5):
        assert shown(page, f"dr-prob-{grade}") == f"{float(want[f'prob_{grade}']):.{PRECISION}f}"
    assert shown(page, "dr-referable-prob") == f"{float(want['referable_prob']):.{PRECISION}f}"
    assert shown(page, "dr-referable") == ("yes" if want["referable"] == "True" else "no")
    assert shown(page, "dr-operating-point") == want["operating_point"]
    if want["referable_threshold"]:
        assert shown(page, "dr-threshold") == f"{float(want['referable_threshold']):.{PRECISION}f}"
    verdict = {None: "not assessed", "True": "gradable", "False": "ungradable"}
    assert shown(page, "dr-gradable") == verdict[want.get("gradable")]
    page.wait_for_selector("#dr-model-view img")
    save_screenshot(page, tmp_path, "demo_answer.png")

    not_an_image = tmp_path / "notes.png"
    not_an_image.write_text("this is a text file, not a photograph\n")
    upload(page, not_an_image)
    page.wait_for_selector("#dr-message:has-text('Could not grade notes.png')")
    assert "is not an image" in shown(page, "dr-message")
    assert page.locator("#dr-grade").count() == 0
    save_screenshot(page, tmp_path, "demo_bad_file.png")

    upload(page, second)
    page.wait_for_selector(f"#dr-image:text-is('{second.name}')")
    assert shown(page, "dr-grade") in {"0", "1", "2", "3", "4"}
    assert shown(page, "dr-prob-0") == f"{float(predicted_row(trained_run, second, tmp_path)['prob_0']):.{PRECISION}f}"  # fmt: skip

    from skimage import data

    person = tmp_path / "astronaut.png"
    Image.fromarray(data.astronaut()).save(person)
    upload(page, person)
    page.wait_for_selector(f"#dr-image:text-is('{person.name}')")
    headline = shown(page, "dr-headline")
    assert headline.startswith("ungradable") and "retake" in headline and "refer" in headline
    assert page.locator("#dr-grade").count() == 0 and "Grade" not in headline
    # the model's grade and probabilities sit in a panel that starts collapsed
    assert not page.locator("#dr-prob-0").is_visible()
    page.locator("#dr-model-output summary").click()
    assert page.locator("#dr-prob-0").is_visible()
    save_screenshot(page, tmp_path, "demo_ungradable.png")


def save_screenshot(page, tmp_path: Path, name: str) -> None:
    folder = Path(os.environ.get("DR_HF_TEST_ARTIFACTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(folder / name), full_page=True)
    if name == "demo_answer.png":
        shutil.copyfile(folder / name, SCREENSHOT)
    assert (folder / name).stat().st_size > 0
