"""The file side of `predict`: gathering the images to grade, and writing the grades out.

Inputs are files, folders (searched recursively), PIL images or RGB arrays; a missing path, an
image-less folder or an image that cannot be decoded becomes a named failure, never a silent
drop. Results are a `PredictionResult`, saved as CSV, JSON Lines or one JSON array. The flags of
`dr-hf predict` (`predict_parser`) live here too, beside the formats they offer.
"""

import argparse
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from dr_hf.data.files import DECODE_ERRORS, IMAGE_EXTENSIONS
from dr_hf.data.transforms import FundusTransform
from dr_hf.grades import REFERABLE_MIN_GRADE
from dr_hf.metrics import referable_scores
from dr_hf.predictions import PROB_COLUMNS, SAVE_FORMATS, predictions_table, write_predictions


def collect_inputs(inputs: Iterable) -> tuple[list, list[str], list[tuple[str, str]]]:
    """(sources, names, failures): files as given, folders' images (recursively, sorted), PIL
    images and arrays as `image_<i>`; a missing path or an image-less folder is a failure."""
    if isinstance(inputs, str | Path | Image.Image | np.ndarray):
        inputs = [inputs]
    sources, names, failures = [], [], []
    for i, item in enumerate(inputs):
        if isinstance(item, Image.Image | np.ndarray):
            sources.append(item)
            names.append(f"image_{i}")
            continue
        path = Path(item)
        if path.is_dir():
            found = sorted(
                p
                for p in path.rglob("*")
                if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()
                if not any(part.startswith(".") for part in p.relative_to(path).parts)
            )
            if not found:
                failures.append((str(path), f"no images ({', '.join(IMAGE_EXTENSIONS)}) in folder"))
            sources += found
            names += [str(p) for p in found]
        elif path.is_file():
            sources.append(path)
            names.append(str(path))
        else:
            failures.append((str(path), "file not found"))
    return sources, names, failures


class ImageList(torch.utils.data.Dataset):
    """Transformed images; one that cannot be decoded or preprocessed yields its error instead."""

    def __init__(self, sources: list, transform: FundusTransform):
        self.sources, self.transform = sources, transform

    def __len__(self) -> int:
        return len(self.sources)

    def __getitem__(self, index: int) -> dict:
        source = self.sources[index]
        try:
            if isinstance(source, np.ndarray):
                image = Image.fromarray(source)
            elif isinstance(source, Image.Image):
                image = source
            else:
                with Image.open(source) as opened:
                    image = ImageOps.exif_transpose(opened).convert("RGB")
            out = self.transform({"image": [image]})
        except DECODE_ERRORS as error:
            return {"index": index, "error": f"{type(error).__name__}: {error}"}
        item = {"index": index, "pixel_values": out["pixel_values"][0]}
        return item | ({"quality": out["quality"][0]} if "quality" in out else {})


def collate_images(items: list[dict]) -> dict:
    """An `ImageList` batch: the decoded images stacked, the failed ones as (index, error)."""
    good = [item for item in items if "pixel_values" in item]
    return {
        "index": [item["index"] for item in good],
        "pixel_values": torch.stack([item["pixel_values"] for item in good]) if good else None,
        "quality": [item.get("quality") for item in good],
        "errors": [(item["index"], item["error"]) for item in items if "error" in item],
    }


@dataclass
class PredictionResult:
    """Grades of the images that could be read, in input order, and why the others could not.

    The referable decision is `operating_point`'s: `argmax` (predicted grade >= 2), or a saved
    operating point (`spec90`, `spec95`) or a given threshold (`threshold`), which refer when
    P(grade >= 2) >= `referable_threshold`; every row names the rule and the threshold that
    decided it. `quality` holds each graded image's gradeability verdict (`gradable`, `issues`),
    when it was assessed; with `only_gradable`, ungradable images keep their verdict and
    probabilities but no grade or referable decision.
    """

    names: list[str]
    probabilities: np.ndarray
    failures: list[tuple[str, str]] = field(default_factory=list)
    referable_threshold: float | None = None
    operating_point: str | None = None
    quality: list | None = None
    only_gradable: bool = False

    def __post_init__(self):
        if self.operating_point is None:
            self.operating_point = "argmax" if self.referable_threshold is None else "threshold"

    @property
    def grades(self) -> np.ndarray:
        return self.probabilities.argmax(axis=1)

    @property
    def referable(self) -> np.ndarray:
        """Grade >= 2 predicted, or P(grade >= 2) >= `referable_threshold` when one is set."""
        if self.referable_threshold is None:
            return self.grades >= REFERABLE_MIN_GRADE
        return referable_scores(self.probabilities) >= self.referable_threshold

    def table(self):
        """The predictions table (`dr_hf.predictions`): graded images first, then failures
        with their `error`."""
        quality = self.quality or [None] * len(self.names)
        graded = [v is None or v.gradable or not self.only_gradable for v in quality]
        return predictions_table(
            self.names,
            self.probabilities,
            referable=self.referable,
            operating_point=self.operating_point,
            referable_threshold=self.referable_threshold,
            quality=self.quality,
            graded=graded,
            failures=self.failures,
        )

    def records(self) -> list[dict]:
        """One dict per row of `table`."""
        return self.table().to_dict(orient="records")

    @property
    def columns(self) -> list[str]:
        return list(self.table().columns)

    def save(self, path: str | Path | None = None, fmt: str | None = None) -> None:
        """`dr_hf.predictions.write_predictions`: CSV, JSON Lines or a JSON array."""
        write_predictions(self.table(), path, fmt)


def predict_parser() -> argparse.ArgumentParser:
    """The flags of `dr-hf predict` (`dr_hf.cli.predict_main` runs it); the output format's
    choices are `PredictionResult.save`'s."""
    parser = argparse.ArgumentParser(
        prog="dr-hf predict",
        description="Grade fundus photographs with a model trained by dr-hf.",
    )
    parser.add_argument("inputs", nargs="*", metavar="IMAGE_OR_FOLDER")
    parser.add_argument(
        "--model",
        required=True,
        nargs="+",
        help="best/, a checkpoint-N or a LoRA adapter "
        "folder; several folders grade as an ensemble (their probabilities averaged). The "
        "names after it that are no model folder (holding config.json or adapter_config.json) "
        "are the images to grade.",
    )
    parser.add_argument(
        "--output",
        help="preds.csv, preds.jsonl (JSON Lines) or preds.json (one JSON array); default: CSV on "
        "standard output.",
    )
    parser.add_argument("--format", choices=SAVE_FORMATS, help="Overrides the file suffix.")
    parser.add_argument("--tta", action="store_true", help="Average over flips and rot90.")
    parser.add_argument("--batch-size", "--batch_size", type=int, default=32)
    parser.add_argument("--device", help="cuda, cuda:1, cpu (default: CUDA when available).")
    parser.add_argument("--num-workers", "--num_workers", type=int, help="Decoding workers.")
    parser.add_argument(
        "--retfound-weights",
        "--retfound_weights",
        help="Base weights of a RETFound adapter, when the recorded path is not found here.",
    )
    parser.add_argument(
        "--referable-threshold",
        "--referable_threshold",
        type=float,
        help="Refer when P(grade >= 2) reaches this threshold (overrides --operating-point).",
    )
    parser.add_argument(
        "--heatmaps",
        metavar="DIR",
        help="Also write each graded photograph with a Grad-CAM overlay for its predicted grade, "
        "beside the grade and probabilities, as DIR/<name>.png.",
    )
    parser.add_argument(
        "--only-gradable",
        "--only_gradable",
        action="store_true",
        help="Leave the grade empty for photographs judged ungradable (they keep their row, "
        "probabilities and quality_issues).",
    )
    parser.add_argument(
        "--operating-point",
        "--operating_point",
        choices=("spec90", "spec95", "argmax"),
        help="Referable decision: the threshold saved with the model for 90%% or 95%% "
        "specificity on its validation split, or the predicted grade >= 2 (argmax); default: "
        "spec90 where the model has it, else argmax.",
    )
    return parser


MODEL_FILES = ("config.json", "adapter_config.json")


def parse_predict_args(argv: list[str]) -> argparse.Namespace:
    """`predict_parser`'s flags, with the images that `--model A B ...` took in given back.

    `--model` takes one or more folders, so `--model best photo.png` reads `photo.png` as a model
    too: every name after the first that is no model folder (one holding `MODEL_FILES`) is an
    image or folder to grade, in the order the command line gives them.
    """
    parser = predict_parser()
    args = parser.parse_intermixed_args(argv)
    spill = [name for name in args.model[1:] if not is_model_folder(name)]
    args.model = [name for name in args.model if name not in spill]
    inputs = spill + args.inputs
    args.inputs = sorted(inputs, key=lambda name: argv.index(name) if name in argv else len(argv))
    if not args.inputs:
        parser.error("the following arguments are required: IMAGE_OR_FOLDER")
    return args


def is_model_folder(path: str | Path) -> bool:
    """A folder that holds a saved model or adapter (`MODEL_FILES`), or a `dr-hf cv` output."""
    return any((Path(path) / name).is_file() for name in (*MODEL_FILES, "cv_summary.json"))


__all__ = [
    "PROB_COLUMNS",
    "SAVE_FORMATS",
    "ImageList",
    "PredictionResult",
    "collate_images",
    "collect_inputs",
    "is_model_folder",
    "parse_predict_args",
    "predict_parser",
]
