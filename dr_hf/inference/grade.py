"""`grade`: the one loop that turns photographs into model outputs: five grade probabilities
(softmax and ordinal heads), or one regression score.

`dr-hf predict`, `dr-hf evaluate`, the demo page and the benchmarks all grade through it. Each
photograph is decoded once (`open_image`), then each grader's processor makes that grader's
input from it (`Grader.view`), so every member of an ensemble sees the photograph as it was
trained to; one grader is an ensemble of one. A photograph that cannot be decoded or
preprocessed becomes a named failure, never a silent drop. `grade_stream` yields each batch's
`Grading` as it is done (an archive is never held in memory); `grade` joins them.
"""

import inspect
import logging
import os
import sys
from collections.abc import Collection, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from datasets import Dataset
from PIL import Image, ImageOps

from dr_hf.data.files import DECODE_ERRORS
from dr_hf.data.photographs import Photograph, PhotographError, open_photograph
from dr_hf.data.preprocessing import to_rgb
from dr_hf.data.quality import MIN_JUDGED_SIDE, assess_quality
from dr_hf.inference.grader import Grader, model_view, same_outputs
from dr_hf.inference.results import Missing, collect_inputs

logger = logging.getLogger(__name__)

PROGRESS_MIN_IMAGES = 64
# Views averaged by test-time augmentation; the batch is square, so rot90 keeps its shape.
TTA_VIEWS = (
    lambda x: x,
    lambda x: torch.flip(x, dims=[3]),
    lambda x: torch.flip(x, dims=[2]),
    lambda x: torch.rot90(x, 1, dims=[2, 3]),
)


def open_image(source) -> Image.Image:
    """A photograph file (see `open_photograph`: upright, first frame, 8-bit RGB), PIL image
    (turned upright by its EXIF orientation, deeper modes scaled to 8-bit RGB) or RGB array."""
    return open_photo(source).image


def open_photo(source) -> Photograph:
    """`open_image` with the notes of what was done to the file (the frame taken, a scaling)."""
    if isinstance(source, np.ndarray):
        return Photograph(Image.fromarray(source))
    if isinstance(source, Image.Image):
        notes: list[str] = []
        return Photograph(to_rgb(ImageOps.exif_transpose(source), notes), notes)
    return open_photograph(source)


@dataclass
class Grading:
    """What `grade` returns: the graded images' names in input order, each grader's outputs
    for them ([N, 5] probabilities or [N, 1] regression scores; `plain`, and with TTA also
    `tta`), why the other images could not be
    graded, the first grader's gradeability verdicts (None when not assessed), and the input
    position of each graded image and then of each failure (`order`), to put rows in input
    order."""

    names: list[str]
    members: list[dict[str, np.ndarray]]
    failures: list[tuple[str, str]]
    quality: list | None = None
    order: list[int] | None = None

    @classmethod
    def join(
        cls, parts: list["Grading"], graders: list[Grader], tta: bool, quality: bool
    ) -> "Grading":
        """The batches' gradings as one, in input order (an empty one for no batches)."""
        variants = ("plain", "tta") if tta else ("plain",)
        members = [
            {
                v: np.concatenate([empty_outputs(grader), *(p.members[m][v] for p in parts)])
                for v in variants
            }
            for m, grader in enumerate(graders)
        ]
        positions = [i for p in parts for i in p.order[: len(p.names)]]
        positions += [i for p in parts for i in p.order[len(p.names) :]]
        return cls(
            [name for p in parts for name in p.names],
            members,
            [failure for p in parts for failure in p.failures],
            [verdict for p in parts for verdict in p.quality] if quality else None,
            positions,
        )

    @property
    def variants(self) -> dict[str, np.ndarray]:
        """Each variant's outputs averaged over the graders, in float64 (an ensemble's
        probabilities, or its regression scores, before any grading rule cuts them)."""
        return {
            name: np.mean([member[name].astype(np.float64) for member in self.members], axis=0)
            for name in self.members[0]
        }


def empty_outputs(grader: Grader) -> np.ndarray:
    """The outputs of no image: [0, 5] or, for a regression model, [0, 1]."""
    return np.zeros((0, grader.width), np.float32)


class _Photos(torch.utils.data.Dataset):
    """Each photograph as every processor's model sees it, with the gradeability verdict of the
    first one's input; one that cannot be decoded or preprocessed yields its error instead. It
    holds processors only, so DataLoader workers never touch a model."""

    def __init__(self, sources: list | Dataset, processors: list, quality: bool):
        self.sources, self.processors, self.quality = sources, processors, quality

    def __len__(self) -> int:
        return len(self.sources)

    def __getitem__(self, index: int) -> dict:
        try:
            source = self.sources[index]
            if isinstance(source, Missing):
                return {"index": index, "error": source.reason}
            photo = open_photo(source["image"] if isinstance(source, dict) else source)
            image = photo.image
            reduced: dict[int, np.ndarray] = {}  # decoded and reduced once per input side
            inputs = []
            for processor in self.processors:
                side = processor.input_side
                if side not in reduced:
                    reduced[side] = processor.reduce(image)
                inputs.append(model_view(processor, reduced[side])[1])
        except PhotographError as error:  # says what is wrong in plain words, naming the file
            return {"index": index, "error": str(error)}
        except DECODE_ERRORS as error:
            return {"index": index, "error": f"{type(error).__name__}: {error}"}
        item = {"index": index, "pixel_values": inputs, "quality": None, "notes": photo.notes}
        if self.quality:  # judged on the array the first model's input was reduced from
            side = self.processors[0].input_side
            judged = reduced[side] if side >= MIN_JUDGED_SIDE else image
            item["quality"] = assess_quality(judged, side)
        return item


def _collate(items: list[dict]) -> dict:
    """A batch: each grader's inputs stacked, the failed images as (index, error)."""
    good = [item for item in items if "pixel_values" in item]
    stacked = [torch.stack(inputs) for inputs in zip(*(item["pixel_values"] for item in good))]
    return {
        "index": [item["index"] for item in good],
        "pixel_values": stacked,
        "quality": [item["quality"] for item in good],
        "notes": [item["notes"] for item in good],
        "errors": [(item["index"], item["error"]) for item in items if "error" in item],
    }


@torch.inference_mode()
def grade_batch(
    grader: Grader, pixel_values: torch.Tensor, tta: bool = False
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The outputs of a normalised batch: softmax probabilities [N, 5] of class logits (an
    ordinal model's log-probabilities give its probabilities back), or a regression model's
    scores [N, 1] as they are; with `tta` also their mean over the flips and rot90 (one forward
    pass over all views)."""
    pixels = pixel_values.to(grader.device, non_blocking=True)
    views = [view(pixels) for view in TTA_VIEWS] if tta else [pixels]
    logits = grader.model(pixel_values=torch.cat(views)).logits.float()
    outputs = logits if logits.shape[-1] == 1 else torch.softmax(logits, dim=-1)
    outputs = outputs.reshape(len(views), len(pixels), -1).cpu()
    return outputs[0], outputs.mean(dim=0) if tta else None


def auto_workers(count: int) -> int:
    """DataLoader workers: none for a handful of images, a few for long lists of photographs."""
    return 0 if count <= PROGRESS_MIN_IMAGES else min(4, os.cpu_count() or 1)


def progress_batches(loader, total: int, progress: bool | None = None) -> Iterator[dict]:
    """The loader's batches under a tqdm bar counting images (`index` and `errors` of each)."""
    from tqdm.auto import tqdm

    show = (total > PROGRESS_MIN_IMAGES or sys.stderr.isatty()) if progress is None else progress
    with tqdm(total=total, unit="img", disable=not show, desc="Grading") as bar:
        for batch in loader:
            yield batch
            bar.update(len(batch["index"]) + len(batch["errors"]))


def grade_stream(
    graders: Grader | list[Grader],
    images,
    tta: bool = False,
    batch_size: int = 32,
    num_workers: int | None = None,
    progress: bool | None = None,
    quality: bool = True,
    skip: Collection[str] = (),
) -> Iterator[Grading]:
    """Grade `images` with every grader, one forward pass per grader and batch, yielding each
    batch's `Grading` (its failures among them) in input order.

    `images` are files, folders of images (searched recursively), PIL images or RGB arrays (see
    `collect_inputs`), or a `datasets.Dataset` with `image` and `image_id` columns, graded row by
    row in order; images named in `skip` are left out. With `tta`, each grader's probabilities
    come plain and averaged over the flips and rot90 (`TTA_VIEWS`) from the same forward pass;
    with `quality`, each image gets the gradeability verdict of the array the first grader's
    input was made from. An ensemble mixing regression models with probability ones is refused
    (`same_outputs`): their outputs cannot be averaged.
    """
    graders = [graders] if isinstance(graders, Grader) else list(graders)
    if not graders:
        raise ValueError("Grading needs at least one model.")
    graders = same_outputs(graders)
    if isinstance(images, Dataset):
        sources, names = images, [str(i) for i in images["image_id"]]
    else:
        sources, names = collect_inputs(images)
    if skip:
        kept = [i for i, name in enumerate(names) if name not in skip]
        sources = (
            sources.select(kept) if isinstance(sources, Dataset) else [sources[i] for i in kept]
        )
        names = [names[i] for i in kept]
    loader = torch.utils.data.DataLoader(
        _Photos(sources, [grader.processor for grader in graders], quality),
        batch_size=batch_size,
        num_workers=auto_workers(len(sources)) if num_workers is None else num_workers,
        collate_fn=_collate,
        pin_memory=any(grader.device.type == "cuda" for grader in graders),
    )
    for batch in progress_batches(loader, len(sources), progress):
        for index, notes in zip(batch["index"], batch["notes"]):
            for note in notes:
                logger.warning("%s: %s.", names[index], note)
        members = []
        for grader, pixels in zip(graders, batch["pixel_values"]):
            plain, averaged = grade_batch(grader, pixels, tta)
            members.append({"plain": plain.numpy()} | ({"tta": averaged.numpy()} if tta else {}))
        if not batch["index"]:  # every image of the batch failed
            variants = ("plain", "tta")[: 1 + tta]
            members = [{v: empty_outputs(grader) for v in variants} for grader in graders]
        yield Grading(
            [names[i] for i in batch["index"]],
            members,
            [(names[index], error) for index, error in batch["errors"]],
            batch["quality"] if quality else None,
            batch["index"] + [index for index, _ in batch["errors"]],
        )


def grade(graders: Grader | list[Grader], images, *args, **options) -> Grading:
    """`grade_stream`'s batches as one `Grading` (its parameters, `grade_stream(graders, images,
    tta, batch_size, num_workers, progress, quality, skip)`): every image in memory, for a list
    or a data set that fits there (an archive goes through `grade_stream`)."""
    call = bind_arguments(grade_stream, graders, images, *args, **options)
    graders = [graders] if isinstance(graders, Grader) else list(graders)
    parts = list(grade_stream(**{**call, "graders": graders}))
    return Grading.join(parts, graders, call["tta"], call["quality"])


def bind_arguments(function, *args, **kwargs) -> dict:
    """Every parameter of `function` as this call gives it or by its default: how a function
    that takes another's parameters (`grade` those of `grade_stream`) reads them; a wrong
    argument is the TypeError `function` would raise."""
    call = inspect.signature(function).bind(*args, **kwargs)
    call.apply_defaults()
    return dict(call.arguments)


grade.__signature__ = inspect.signature(grade_stream).replace(return_annotation=Grading)


__all__ = [
    "TTA_VIEWS",
    "Grading",
    "bind_arguments",
    "grade",
    "grade_batch",
    "grade_stream",
    "open_image",
]
