"""Grading photographs with a trained model: `predict` for notebooks and `dr-hf predict`.

The model is any folder training produced (full model, `best/`, `checkpoint-N`, LoRA adapter) or
a model already in memory. Preprocessing is never re-specified: it is read from the
`dr_hf_preprocessing.json` that training wrote beside the model (or in the run folder, for a
checkpoint), and applied through the deterministic validation path of `dr_hf.transforms`.
"""

import argparse
import csv
import json
import logging
import os
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from dr_hf.data_checks import IMAGE_EXTENSIONS
from dr_hf.export import read_preprocessing
from dr_hf.grades import GRADE_NAMES, NUM_GRADES, REFERABLE_MIN_GRADE
from dr_hf.metrics import referable_scores
from dr_hf.transforms import FundusTransform, get_transforms, resolve_normalization

logger = logging.getLogger(__name__)

PROB_COLUMNS = [f"prob_{grade}" for grade in range(NUM_GRADES)]
PROGRESS_MIN_IMAGES = 64
SAVE_FORMATS = ("csv", "jsonl", "json")
# Views averaged by test-time augmentation; the batch is square, so rot90 keeps its shape.
TTA_VIEWS = (
    lambda x: x,
    lambda x: torch.flip(x, dims=[3]),
    lambda x: torch.flip(x, dims=[2]),
    lambda x: torch.rot90(x, 1, dims=[2, 3]),
)
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)


@dataclass
class Grader:
    """A model in eval mode on its device, with the preprocessing it was trained with."""

    model: torch.nn.Module
    preprocessing: dict
    device: torch.device

    def transform(self, already_done: dict | None = None) -> FundusTransform:
        """The deterministic transform; `already_done` is a `dr-hf prepare` record whose crop or
        Ben Graham step is then not repeated."""
        record, done = self.preprocessing, already_done or {}
        _, val = get_transforms(record["image_size"], record["mean"], record["std"])
        return FundusTransform(
            val,
            crop=record["crop_fov"] and not done.get("crop"),
            ben_graham=record["ben_graham"] and not done.get("ben_graham"),
            train=False,
            size=record["image_size"],
        )


def load_grader(
    model: str | Path | torch.nn.Module,
    retfound_weights: str | None = None,
    device: str | torch.device | None = None,
    preprocessing: dict | None = None,
    force: bool = False,
) -> Grader:
    """Load `model` (a folder or a loaded model) for inference on `device` (default: CUDA if any).

    A folder's own preprocessing record is used; a model in memory without `preprocessing` gets
    its config's size and normalisation with the training defaults (crop on, Ben Graham off).
    """
    from dr_hf.models import load_trained_model

    if isinstance(model, str | Path):
        folder = Path(model)
        record = preprocessing or read_preprocessing(folder)
        model = load_trained_model(folder, retfound_weights=retfound_weights, force=force)
        if record is None:
            logger.warning(
                "%s has no dr_hf_preprocessing.json (nor has its parent): using the model's "
                "input size and normalisation with the field-of-view crop and no Ben Graham.",
                folder,
            )
    else:
        record = preprocessing
    if record is None:
        mean, std, size = resolve_normalization(model)
        record = {"image_size": size, "crop_fov": True, "ben_graham": False}
        record |= {"mean": list(mean), "std": list(std)}
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    return Grader(model.to(device).eval(), dict(record), device)


@torch.inference_mode()
def grade_batch(
    grader: Grader, pixel_values: torch.Tensor, tta: bool = False
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Softmax probabilities of a normalised batch, and with `tta` their mean over the flips and
    rot90 (one forward pass over all views)."""
    pixels = pixel_values.to(grader.device, non_blocking=True)
    views = [view(pixels) for view in TTA_VIEWS] if tta else [pixels]
    logits = grader.model(pixel_values=torch.cat(views)).logits.float()
    probs = torch.softmax(logits, dim=-1).reshape(len(views), len(pixels), -1).cpu()
    return probs[0], probs.mean(dim=0) if tta else None


def auto_workers(count: int) -> int:
    """DataLoader workers: none for a handful of images, a few for long lists of photographs."""
    return 0 if count <= PROGRESS_MIN_IMAGES else min(4, os.cpu_count() or 1)


def show_progress(count: int) -> bool:
    return count > PROGRESS_MIN_IMAGES or sys.stderr.isatty()


@dataclass
class PredictionResult:
    """Grades of the images that could be read, in input order, and why the others could not."""

    names: list[str]
    probabilities: np.ndarray
    failures: list[tuple[str, str]] = field(default_factory=list)
    referable_threshold: float | None = None

    @property
    def grades(self) -> np.ndarray:
        return self.probabilities.argmax(axis=1)

    @property
    def referable(self) -> np.ndarray:
        """Grade >= 2 predicted, or P(grade >= 2) >= `referable_threshold` when one is set."""
        if self.referable_threshold is None:
            return self.grades >= REFERABLE_MIN_GRADE
        return referable_scores(self.probabilities) >= self.referable_threshold

    def records(self) -> list[dict]:
        """One dict per input: graded images first, then failures with their `error`."""
        rows = []
        grades, referable = self.grades, self.referable
        scores = referable_scores(self.probabilities)
        for i, name in enumerate(self.names):
            grade = int(grades[i])
            row = {"image": name, "grade": grade, "grade_name": GRADE_NAMES[grade]}
            row |= {c: round(float(p), 6) for c, p in zip(PROB_COLUMNS, self.probabilities[i])}
            row |= {"referable_prob": round(float(scores[i]), 6), "referable": bool(referable[i])}
            rows.append(row | {"error": ""})
        return rows + [{"image": name, "error": reason} for name, reason in self.failures]

    def save(self, path: str | Path | None = None, fmt: str | None = None) -> None:
        """CSV, JSON Lines (`.jsonl`) or a JSON array (`.json`), by `fmt` or else the path's
        suffix; CSV on stdout without a path."""
        suffix = Path(path).suffix.lower() if path else ""
        fmt = fmt or {".jsonl": "jsonl", ".json": "json"}.get(suffix, "csv")
        if fmt not in SAVE_FORMATS:
            raise ValueError(f"fmt={fmt!r} is not known: choose one of {SAVE_FORMATS}.")
        handle = open(path, "w", newline="") if path else sys.stdout
        try:
            if fmt == "json":
                json.dump(self.records(), handle, indent=1)
                handle.write("\n")
            elif fmt == "jsonl":
                for row in self.records():
                    handle.write(json.dumps(row) + "\n")
            else:
                columns = ["image", "grade", "grade_name", *PROB_COLUMNS]
                columns += ["referable_prob", "referable", "error"]
                writer = csv.DictWriter(handle, fieldnames=columns)
                writer.writeheader()
                writer.writerows(self.records())
        finally:
            if path:
                handle.close()


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


class _ImageList(torch.utils.data.Dataset):
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
            pixels = self.transform({"image": [image]})["pixel_values"][0]
        except _DECODE_ERRORS as error:
            return {"index": index, "error": f"{type(error).__name__}: {error}"}
        return {"index": index, "pixel_values": pixels}


def _collate(items: list[dict]) -> dict:
    good = [item for item in items if "pixel_values" in item]
    return {
        "index": [item["index"] for item in good],
        "pixel_values": torch.stack([item["pixel_values"] for item in good]) if good else None,
        "errors": [(item["index"], item["error"]) for item in items if "error" in item],
    }


def progress_batches(loader, total: int, progress: bool | None = None) -> Iterator[dict]:
    """The loader's batches under a tqdm bar counting images (`index` and `errors` of each)."""
    from tqdm.auto import tqdm

    show = show_progress(total) if progress is None else progress
    with tqdm(total=total, unit="img", disable=not show, desc="Grading") as bar:
        for batch in loader:
            yield batch
            bar.update(len(batch["index"]) + len(batch["errors"]))


def predict(
    model: str | Path | torch.nn.Module | Grader,
    inputs,
    tta: bool = False,
    batch_size: int = 32,
    device: str | None = None,
    retfound_weights: str | None = None,
    num_workers: int | None = None,
    progress: bool | None = None,
    referable_threshold: float | None = None,
) -> PredictionResult:
    """Grade image files, folders of images, PIL images or RGB arrays in batches.

    Unreadable files are collected in `failures` (logged one by one); the rest are graded.
    """
    grader = model if isinstance(model, Grader) else load_grader(model, retfound_weights, device)
    sources, names, failures = collect_inputs(inputs)
    workers = auto_workers(len(sources)) if num_workers is None else num_workers
    loader = torch.utils.data.DataLoader(
        _ImageList(sources, grader.transform()),
        batch_size=batch_size,
        num_workers=workers,
        collate_fn=_collate,
        pin_memory=grader.device.type == "cuda",
    )
    indices, chunks = [], []
    for batch in progress_batches(loader, len(sources), progress):
        failures += [(names[index], error) for index, error in batch["errors"]]
        if batch["pixel_values"] is not None:
            plain, averaged = grade_batch(grader, batch["pixel_values"], tta)
            chunks.append((averaged if tta else plain).numpy())
            indices += batch["index"]
    for name, reason in failures:
        logger.warning("Could not grade %s: %s", name, reason)
    probabilities = np.concatenate(chunks) if chunks else np.zeros((0, NUM_GRADES), np.float32)
    return PredictionResult(
        [names[i] for i in indices], probabilities, failures, referable_threshold
    )


def predict_main(argv: list[str]) -> int:
    """`dr-hf predict`: 0 when every image was graded, 1 when some failed, 2 on usage errors."""
    parser = argparse.ArgumentParser(
        prog="dr-hf predict",
        description="Grade fundus photographs with a model trained by dr-hf.",
    )
    parser.add_argument("inputs", nargs="+", metavar="IMAGE_OR_FOLDER")
    parser.add_argument(
        "--model", required=True, help="best/, a checkpoint-N or a LoRA adapter folder."
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
        help="Refer when P(grade >= 2) reaches this (e.g. the threshold `dr-hf evaluate` reports "
        "at 90%% specificity); default: predicted grade >= 2.",
    )
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0)
    if args.batch_size < 1:
        print(f"--batch-size must be at least 1, got {args.batch_size}.", file=sys.stderr)
        return 2
    try:
        grader = load_grader(args.model, args.retfound_weights, args.device)
    except (FileNotFoundError, ValueError) as error:
        print(f"dr-hf predict: cannot load the model: {error}", file=sys.stderr)
        return 2
    result = predict(
        grader,
        args.inputs,
        tta=args.tta,
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        referable_threshold=args.referable_threshold,
    )
    if not result.names and not result.failures:
        print("dr-hf predict: no images given.", file=sys.stderr)
        return 2
    result.save(args.output, args.format)
    for name, reason in result.failures:
        print(f"FAILED {name}: {reason}", file=sys.stderr)
    summary = f"Graded {len(result.names)} image(s)"
    summary += f" into {args.output}" if args.output else ""
    if result.failures:
        print(f"{summary}; {len(result.failures)} could not be graded.", file=sys.stderr)
        return 1
    print(f"{summary}.", file=sys.stderr)
    return 0


__all__ = [
    "Grader",
    "PredictionResult",
    "collect_inputs",
    "grade_batch",
    "load_grader",
    "predict",
    "predict_main",
]
