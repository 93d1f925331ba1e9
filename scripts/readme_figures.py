"""Make the README's heatmap figure: the quick-start model on a referable synthetic photograph.

    python scripts/readme_figures.py [--model outputs/quickstart/best] [--output scripts/figures]

Renders a fresh synthetic set (seed 11, not the training set's) and writes the Grad-CAM figure
of its first referable photograph as heatmap.png.
"""

import argparse
import csv
import tempfile
from pathlib import Path

from PIL import Image

from dr_hf.data.synthetic import make_synthetic
from dr_hf.evaluation.heatmaps import heatmaps_for
from dr_hf.evaluation.predict import load_grader


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="outputs/quickstart/best")
    parser.add_argument("--output", default="scripts/figures")
    args = parser.parse_args()
    grader = load_grader(args.model, device="cpu")
    with tempfile.TemporaryDirectory() as scratch:
        folder = make_synthetic(Path(scratch) / "set", num_images=40, image_size=320, seed=11)
        with open(folder / "train.csv", newline="") as handle:
            rows = list(csv.DictReader(handle))
        image_id = next(row["id_code"] for row in rows if int(row["diagnosis"]) >= 3)
        photo = Image.open(folder / "train_images" / f"{image_id}.png").convert("RGB")
        Path(args.output).mkdir(parents=True, exist_ok=True)
        (path,) = heatmaps_for(grader, [photo], args.output, ["heatmap"])
    print(f"Wrote {path} (synthetic photograph {image_id})")


if __name__ == "__main__":
    main()
