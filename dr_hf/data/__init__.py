"""Fundus photographs in, `datasets.Dataset` out.

Owns everything between the files on disk and the `pixel_values` a model sees: reading the
layouts (`sources`: APTOS, EyePACS, IDRiD CSVs, grade folders, saved datasets), the checks that
stop bad input before training (`checks`, `files`), who each photograph belongs to (`patients`),
every split by patient (`splits`: the train/validation split and the cv folds), the
field-of-view crop and Ben Graham normalisation (`preprocessing`) and the image processor that
saves them with a model (`fundus_processor`), Albumentations augmentation applied on the fly
(`transforms`), the `dr-hf prepare` cache (`prepare`) and what a run still does to data prepared
there (`prepared`), the gradeability verdict (`quality`) and the synthetic sets (`synthetic`: APTOS-layout
photographs, or EyePACS-layout patients whose eyes share a look; drawn by `fundus_render`).
Nothing here knows about models.
"""

import importlib

_EXPORTS = {
    "FEATURES": "dr_hf.data.sources",
    "load_dr_dataset": "dr_hf.data.loading",
    "load_dr_images": "dr_hf.data.loading",
    "stratified_split": "dr_hf.data.splits",
    "DataError": "dr_hf.errors",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    # Lazy, so that importing one module of the package (the processor) does not load datasets.
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'dr_hf.data' has no attribute {name!r}")
