"""Fundus photographs in, `datasets.Dataset` out.

Owns everything between the files on disk and the `pixel_values` a model sees: reading the
layouts (`sources`: APTOS, EyePACS, IDRiD CSVs, grade folders, saved datasets), the checks that
stop bad input before training (`checks`, `files`), the train/validation split (`loading`), the
field-of-view crop and Ben Graham normalisation (`preprocessing`), Albumentations augmentation
applied on the fly (`transforms`), the `dr-hf prepare` cache (`prepare`) and the synthetic
fundus set (`synthetic`, drawn by `fundus_render`). Nothing here knows about models.
"""

from dr_hf.data.loading import FEATURES, load_dr_dataset, load_dr_images, stratified_split
from dr_hf.errors import DataError

__all__ = ["FEATURES", "DataError", "load_dr_dataset", "load_dr_images", "stratified_split"]
