"""Make the docs' figures: the quick-start model on a referable synthetic photograph.

    python scripts/readme_figures.py [--model outputs/quickstart/best] [--output scripts/figures]

Renders a fresh synthetic set (seed 11, not the training set's) and writes the Grad-CAM figure
of its first photograph of grade 3 or more as heatmap.png, and, with `--demo` (needs the demo
extra and Debian's chromium), a screenshot of `dr-hf demo` grading that photograph as demo.png.
"""

import argparse
import csv
import tempfile
from pathlib import Path

from dr_hf.data.synthetic import make_synthetic
from dr_hf.evaluation.heatmaps import heatmaps_for
from dr_hf.inference import load_grader, open_image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="outputs/quickstart/best")
    parser.add_argument("--output", default="scripts/figures")
    parser.add_argument("--demo", action="store_true", help="Also screenshot the demo page.")
    args = parser.parse_args()
    grader = load_grader(args.model, device="cpu")
    with tempfile.TemporaryDirectory() as scratch:
        folder = make_synthetic(Path(scratch) / "set", num_images=40, image_size=320, seed=11)
        with open(folder / "train.csv", newline="") as handle:
            rows = list(csv.DictReader(handle))
        row = next(row for row in rows if int(row["diagnosis"]) >= 3)
        photo = open_image(folder / "train_images" / f"{row['id_code']}.png")
        title = f"synthetic {row['id_code']}, true grade {row['diagnosis']}"
        (written,) = heatmaps_for(grader, [photo], scratch, [title])
        path = Path(args.output) / "heatmap.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(written.read_bytes())
        print(f"Wrote {path} ({title})")
        if args.demo:
            photo_path = folder / "train_images" / f"{row['id_code']}.png"
            print(f"Wrote {demo_screenshot(grader, photo_path, Path(args.output) / 'demo.png')}")


def demo_screenshot(grader, photo: Path, path: Path) -> Path:
    """The demo page on 127.0.0.1 after grading `photo`, in headless Chromium."""
    from playwright.sync_api import sync_playwright

    from dr_hf.demo.app import DemoServer

    with DemoServer(grader) as server, sync_playwright() as playwright:
        server.launch(port=7999, block=False, quiet=True)
        browser = playwright.chromium.launch(
            executable_path="/usr/bin/chromium", args=["--no-sandbox"]
        )
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        page.goto(server.url)
        page.locator("#dr-photo input[type=file]").set_input_files(str(photo))
        page.wait_for_selector(f"#dr-image:text-is('{photo.name}')", timeout=60_000)
        page.wait_for_selector("#dr-model-view img")
        page.screenshot(path=str(path), full_page=True)
        browser.close()
    return path


if __name__ == "__main__":
    main()
