"""`dr-hf prepare`: a preprocessed copy of a dataset, so training need not crop every epoch.

Each image is cropped to its field of view, resized so that its shorter side is `size`, and
optionally Ben-Graham normalised (`preprocess_fundus`, as the on-the-fly transform does), then
stored PNG-encoded (or JPEG, quality 95: smaller, lossy). `datasets.map` writes the encoded images to Arrow files as it goes, so
memory stays flat: beside a source read from disk (its usual cache, which a rerun finds), or,
for a source held in memory such as `load_dr_dataset`'s, in a temporary folder beside the
output that is removed once `save_to_disk` has written the result. `dr_hf_prepare.json` beside
it records what was done so that the training transform does not do it twice.

`format="raw"` stores each image instead as raw uint8 bytes, `image_size` square, in a `pixels`
column: the array the training pipeline's Resize would make of the PNG cache's image (the same
crop, the same `size`, the same area resampling), so a worker reads bytes and decodes nothing.
No margin is stored around it: every geometric augmentation of the training list acts on that
square and fills with black outside it, on the CPU as on the device. A run must train at the
`image_size` the cache was written for (`data.prepared.check_raw_cache`).
"""

import io
import json
import logging
import shutil
import tempfile
from importlib.metadata import version
from pathlib import Path
from typing import Any

import cv2
from datasets import DatasetDict, Features, Value
from PIL import Image

from dr_hf.data.preprocessing import preprocess_fundus

logger = logging.getLogger(__name__)

PREPARE_INFO = "dr_hf_prepare.json"
FORMATS = ("png", "jpeg", "raw")
_JPEG_QUALITY = 95
RAW_COLUMN = "pixels"
_PNG_COMPRESSION = 1  # ~4x faster to write than the default level 6, files ~25 % larger
_WRITER_BATCH = 100  # encoded images held in memory between two writes of map's Arrow file


def _prepare_batch(
    batch: dict[str, list], size: int, crop: bool, ben_graham: bool, jpeg: bool = False
) -> dict:
    images = []
    for image in batch["image"]:
        array = preprocess_fundus(image, crop=crop, ben_graham=ben_graham, size=size)
        buffer = io.BytesIO()
        if jpeg:
            Image.fromarray(array).save(buffer, format="JPEG", quality=_JPEG_QUALITY)
        else:
            Image.fromarray(array).save(buffer, format="PNG", compress_level=_PNG_COMPRESSION)
        images.append({"bytes": buffer.getvalue(), "path": None})
    return {"image": images}


def _prepare_batch_raw(
    batch: dict[str, list], size: int, crop: bool, ben_graham: bool, image_size: int
) -> dict:
    pixels = []
    for image in batch["image"]:
        array = preprocess_fundus(image, crop=crop, ben_graham=ben_graham, size=size)
        if array.shape[:2] != (image_size, image_size):
            array = cv2.resize(array, (image_size, image_size), interpolation=cv2.INTER_AREA)
        pixels.append(array.tobytes())
    return {RAW_COLUMN: pixels}


def _writer(dataset: DatasetDict, format: str, image_size: int | None):
    """(map function, its extra arguments, columns it replaces, output features) of `format`."""
    features = next(iter(dataset.values())).features
    if format in ("png", "jpeg"):
        return _prepare_batch, {"jpeg": format == "jpeg"}, None, features
    kept = {name: feature for name, feature in features.items() if name != "image"}
    raw_features = Features({RAW_COLUMN: Value("binary")} | kept)
    return _prepare_batch_raw, {"image_size": image_size}, ["image"], raw_features


def read_prepare_info(path: str | Path) -> dict[str, Any] | None:
    """What `prepare_dataset` recorded in `path`, or None when `path` is not its output."""
    info = Path(path) / PREPARE_INFO
    if not info.is_file():
        return None
    try:
        return json.loads(info.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(
            f"{info} is not valid JSON ({err}): re-run `dr-hf prepare` into an empty folder."
        ) from err


def steps_to_apply(crop: bool, ben_graham: bool, prepared: dict | None) -> tuple[bool, bool]:
    """(crop, ben_graham) still to do on images of a source whose `dr-hf prepare` record is
    `prepared` (None: raw images), for a model that wants `crop` and `ben_graham`."""
    if prepared is None:
        return crop, ben_graham
    return crop and not prepared["crop"], ben_graham and not prepared["ben_graham"]


def _check_output_dir(dataset: DatasetDict, output_dir: Path) -> None:
    if not output_dir.exists() or not any(output_dir.iterdir()):
        return
    if read_prepare_info(output_dir) is None:
        raise FileExistsError(
            f"{output_dir} is not empty and holds no {PREPARE_INFO}, so it is not an earlier "
            "`dr-hf prepare` output: choose an empty or new folder."
        )
    resolved = output_dir.resolve()
    for split in dataset.values():
        for cache in split.cache_files:
            if resolved in Path(cache["filename"]).resolve().parents:
                raise ValueError(
                    f"the dataset being prepared is read from {output_dir}: write the prepared "
                    "copy to another folder."
                )


def prepare_dataset(
    dataset: DatasetDict,
    output_dir: str | Path,
    size: int,
    crop: bool = True,
    ben_graham: bool = False,
    num_proc: int | None = None,
    format: str = "png",
    image_size: int | None = None,
) -> Path:
    """Write a preprocessed copy of `dataset` to `output_dir` and return it: the same columns
    (PNG), or with `pixels` (raw uint8, `image_size` square) in place of `image` (raw).

    An earlier prepare output in `output_dir` is replaced; any other non-empty folder is refused.
    """
    if size < 1:
        raise ValueError(
            f"size={size} must be a positive number of pixels, e.g. 1.25x the training size."
        )
    if format not in FORMATS:
        raise ValueError(f"format={format!r} is not known: choose one of {', '.join(FORMATS)}.")
    if format == "raw" and (image_size is None or image_size < 1):
        raise ValueError(
            "format='raw' stores the images at the training size: pass image_size, e.g. 224."
        )
    output_dir = Path(output_dir)
    _check_output_dir(dataset, output_dir)
    function, kwargs, remove, features = _writer(dataset, format, image_size)
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}-map-", dir=output_dir.parent))
    try:
        prepared = dataset.map(
            function,
            batched=True,
            batch_size=16,
            fn_kwargs={"size": size, "crop": crop, "ben_graham": ben_graham} | kwargs,
            features=features,
            remove_columns=remove,
            num_proc=num_proc,
            cache_file_names={
                name: None if split.cache_files else str(scratch / f"{name}.arrow")
                for name, split in dataset.items()
            },
            writer_batch_size=_WRITER_BATCH,
            desc=f"Preprocessing fundus images to {size} px",
        )
        if output_dir.exists():
            shutil.rmtree(output_dir)
        prepared.save_to_disk(str(output_dir))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    info = {"crop": crop, "ben_graham": ben_graham, "size": size}
    if format != "png":
        info["format"] = format
    if format == "raw":
        info["image_size"] = image_size
    info["dr_hf_version"] = version("dr-hf")
    (output_dir / PREPARE_INFO).write_text(json.dumps(info, indent=2) + "\n")
    return output_dir
