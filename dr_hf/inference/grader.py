"""Grading photographs with a trained model: `predict`, for notebooks and `dr-hf predict`, and
`grade_dataset`, the forward passes of `dr-hf evaluate`.

The model is any folder training produced (full model, `best/`, `checkpoint-N`, LoRA adapter) or
a model already in memory. Preprocessing is never re-specified: it is the model folder's
`FundusImageProcessor` (its `preprocessor_config.json`, which `pipeline()` reads too), applied
through the deterministic validation path of `dr_hf.data.transforms`, which calls the same
functions. Folders saved before the processor existed carry `dr_hf_preprocessing.json` instead,
which is read in its place.
Gathering the images and writing the grades out live in `dr_hf.evaluation.prediction_io`; the
command line (flags, messages, exit codes) in `dr_hf.cli`.
"""

import logging
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from datasets import Dataset
from transformers import default_data_collator
from transformers.utils import IMAGE_PROCESSOR_NAME

from dr_hf.data.fundus_processor import FundusImageProcessor
from dr_hf.data.prepare import steps_to_apply
from dr_hf.data.transforms import FundusTransform
from dr_hf.evaluation.prediction_io import (
    ImageList,
    PredictionResult,
    collate_images,
    collect_inputs,
)
from dr_hf.grades import NUM_GRADES
from dr_hf.models.parts import data_config, operating_points
from dr_hf.run_folder import read_preprocessing

logger = logging.getLogger(__name__)

PROGRESS_MIN_IMAGES = 64
# Views averaged by test-time augmentation; the batch is square, so rot90 keeps its shape.
TTA_VIEWS = (
    lambda x: x,
    lambda x: torch.flip(x, dims=[3]),
    lambda x: torch.flip(x, dims=[2]),
    lambda x: torch.rot90(x, 1, dims=[2, 3]),
)


@dataclass
class Grader:
    """A model in eval mode on its device, with the processor it was validated with."""

    model: torch.nn.Module
    processor: FundusImageProcessor
    device: torch.device

    @property
    def preprocessing(self) -> dict:
        """The processor's settings, as evaluation reports record them."""
        p = self.processor
        return {
            "image_size": p.input_side, "crop_fov": p.crop_fov, "ben_graham": p.ben_graham,
            "mean": list(p.image_mean), "std": list(p.image_std),
        }  # fmt: skip

    def transform(self, already_done: dict | None = None, quality: bool = False) -> FundusTransform:
        """The deterministic transform; `already_done` is a `dr-hf prepare` record whose crop or
        Ben Graham step is then not repeated; `quality` adds each image's gradeability verdict."""
        p = self.processor
        crop, ben_graham = steps_to_apply(p.crop_fov, p.ben_graham, already_done)
        return FundusTransform(
            None, crop=crop, ben_graham=ben_graham, train=False, size=p.input_side,
            mean=p.image_mean, std=p.image_std, quality=quality,
        )  # fmt: skip


OPERATING_POINTS = ("spec90", "spec95", "argmax")


def decision_rule(
    grader: Grader, operating_point: str | None = None, threshold: float | None = None
) -> tuple[str, float | None]:
    """(rule, threshold on P(grade >= 2)) deciding referable DR for `grader`'s predictions.

    A given `threshold` wins (rule `threshold`); `argmax` refers on the predicted grade (no
    threshold); `spec90` / `spec95` use the threshold training saved in the model's config for
    that specificity. By default `spec90` where the model has it, else `argmax`.
    """
    if threshold is not None:
        return "threshold", float(threshold)
    if operating_point not in (None, *OPERATING_POINTS):
        raise ValueError(f"operating_point={operating_point!r}: choose one of {OPERATING_POINTS}.")
    if operating_point == "argmax":
        return "argmax", None
    name = operating_point or "spec90"
    saved = operating_points(grader.model).get(f"spec_{name.removeprefix('spec')}") or {}
    if saved.get("threshold") is not None:
        return name, float(saved["threshold"])
    if operating_point is not None:
        raise ValueError(
            f"The model has no saved {name} operating point (it was trained without one, or its "
            "validation split lacked a grade): use --operating-point argmax or "
            "--referable-threshold P."
        )
    return "argmax", None


def load_processor(folder: str | Path) -> FundusImageProcessor | None:
    """The processor saved in a model folder (or, for a checkpoint of a run still going, in the
    run folder); for a folder saved before processors were, one built from its
    `dr_hf_preprocessing.json`; None when there is neither."""
    folder = Path(folder)
    for candidate in (folder, folder.parent):
        if (candidate / IMAGE_PROCESSOR_NAME).is_file():
            config = FundusImageProcessor.get_image_processor_dict(str(candidate))[0]
            if config.get("image_processor_type") == FundusImageProcessor.__name__:
                return FundusImageProcessor.from_pretrained(str(candidate))
    record = read_preprocessing(folder)
    if record is None:
        return None
    logger.info("%s predates preprocessor_config.json: using its dr_hf_preprocessing.json.", folder)
    return FundusImageProcessor(
        size=record["image_size"], crop_fov=record["crop_fov"], ben_graham=record["ben_graham"],
        image_mean=record["mean"], image_std=record["std"],
    )  # fmt: skip


def load_grader(
    model: str | Path | torch.nn.Module,
    retfound_weights: str | None = None,
    device: str | torch.device | None = None,
    processor: FundusImageProcessor | None = None,
    force: bool = False,
) -> Grader:
    """Load `model` (a folder or a loaded model) for inference on `device` (default: CUDA if any).

    A folder's own processor is used (see `load_processor`); a model without one gets its
    config's size and normalisation with the training defaults (crop on, Ben Graham off).
    """
    from dr_hf.models.graders import load_trained_model

    if isinstance(model, str | Path):
        folder = Path(model)
        processor = processor or load_processor(folder)
        model = load_trained_model(folder, retfound_weights=retfound_weights, force=force)
        if processor is None:
            logger.warning(
                "%s has no preprocessor_config.json (nor has its parent): using the model's "
                "input size and normalisation with the field-of-view crop and no Ben Graham.",
                folder,
            )
    if processor is None:
        mean, std, size = data_config(model)
        processor = FundusImageProcessor(size=size, image_mean=list(mean), image_std=list(std))
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    return Grader(model.to(device).eval(), processor, device)


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
    operating_point: str | None = None,
    quality: bool = True,
    only_gradable: bool = False,
) -> PredictionResult:
    """Grade image files, folders of images, PIL images or RGB arrays in batches.

    Unreadable files are collected in `failures` (logged one by one); every other image is
    graded, and with `quality` (the default) gets its gradeability verdict; `only_gradable`
    leaves the grade of ungradable images empty. The referable decision follows
    `decision_rule(grader, operating_point, referable_threshold)`.
    """
    grader = model if isinstance(model, Grader) else load_grader(model, retfound_weights, device)
    rule, threshold = decision_rule(grader, operating_point, referable_threshold)
    sources, names, failures = collect_inputs(inputs)
    workers = auto_workers(len(sources)) if num_workers is None else num_workers
    loader = torch.utils.data.DataLoader(
        ImageList(sources, grader.transform(quality=quality)),
        batch_size=batch_size,
        num_workers=workers,
        collate_fn=collate_images,
        pin_memory=grader.device.type == "cuda",
    )
    indices, chunks, verdicts = [], [], []
    for batch in progress_batches(loader, len(sources), progress):
        failures += [(names[index], error) for index, error in batch["errors"]]
        if batch["pixel_values"] is not None:
            plain, averaged = grade_batch(grader, batch["pixel_values"], tta)
            chunks.append((averaged if tta else plain).numpy())
            indices += batch["index"]
            verdicts += batch["quality"]
    for name, reason in failures:
        logger.warning("Could not grade %s: %s", name, reason)
    probabilities = np.concatenate(chunks) if chunks else np.zeros((0, NUM_GRADES), np.float32)
    return PredictionResult(
        [names[i] for i in indices], probabilities, failures, threshold, operating_point=rule,
        quality=verdicts if quality else None, only_gradable=only_gradable,
    )  # fmt: skip


def grade_dataset(
    grader: Grader,
    dataset: Dataset,
    prepared: dict | None = None,
    tta: bool = False,
    batch_size: int = 32,
    num_workers: int | None = None,
) -> tuple[dict[str, np.ndarray], list]:
    """Float64 probabilities of every row of a labelled `dataset`, in order: {"plain": ...}, and
    with `tta` also {"tta": ...}; one forward pass per batch serves both. Also each row's
    gradeability verdict, judged as the rows are decoded.

    The grader's deterministic transform is applied on the fly; `prepared` is the `dr-hf prepare`
    record of the data folder, whose crop / Ben Graham step is then not repeated.
    """
    loader = torch.utils.data.DataLoader(
        dataset.with_transform(grader.transform(prepared, quality=True)),
        batch_size=batch_size,
        num_workers=auto_workers(len(dataset)) if num_workers is None else num_workers,
        collate_fn=_collate_rows,
        pin_memory=grader.device.type == "cuda",
    )
    plain_chunks, tta_chunks, verdicts = [], [], []
    for batch in progress_batches(loader, len(dataset)):
        verdicts += batch["quality"]
        plain, averaged = grade_batch(grader, batch["pixel_values"], tta)
        plain_chunks.append(plain.double().numpy())
        if tta:
            tta_chunks.append(averaged.double().numpy())
    variants = {"plain": np.concatenate(plain_chunks)}
    if tta:
        variants["tta"] = np.concatenate(tta_chunks)
    return variants, verdicts


def _collate_rows(items: list[dict]) -> dict:
    """A dataset batch with the `index` and (no) `errors` that `progress_batches` counts, and
    the rows' gradeability verdicts."""
    verdicts = [item.pop("quality") for item in items]
    batch = default_data_collator(items)
    return batch | {"quality": verdicts, "index": list(range(len(items))), "errors": []}


__all__ = [
    "Grader",
    "grade_batch",
    "grade_dataset",
    "load_grader",
    "predict",
]
