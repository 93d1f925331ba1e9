"""Synthetic patients: both eyes of one patient, EyePACS layout, and the unchanged single renders."""

import csv
import hashlib

import cv2
import numpy as np
import pytest

from dr_hf.data.fundus_render import FundusGeometry, render_fundus
from dr_hf.data.synthetic import make_synthetic

# sha256 of (photograph bytes + lesion mask bytes) rendered before patients existed: a render
# without a patient's look must stay byte-identical (the quick start and the published figures
# were drawn this way). (grade, width, height, seed) -> digest; 160x96 seed 4 is a wide frame
# whose disc is cut at top and bottom.
OLD_RENDERS = {
    (0, 64, 64, 0): "ab5a2da4a36c83cf79955bfdd17349357aa001117593725211e1e9c9657851c6",
    (1, 64, 64, 1): "1d237a4bf8c1e4d2c52b6dd83d630d361607e18537e3e254f2a90742d43184c2",
    (2, 96, 64, 2): "057fd52ba92c371622510c94cea2608ba348b1795e1dafe0b7c784d89d066c76",
    (3, 128, 80, 3): "7ce892f172764384b87d88c8709cda9567311adf7ceb0262f423e65eaab76c8c",
    (4, 160, 96, 4): "0429d307cac51fa5d1244a93fe0390701c3254c36326099194f911192d300888",
    (4, 48, 48, 5): "403d8deac9571cd6de692059dcd9e89494ffc3b29aeb6d5cf253b5419513510c",
    (2, 300, 200, 6): "b44404649280bcdb91a4521a7b1fdf4d8da03fc11c48168f5e25d23a3fefe597",
    (3, 64, 64, 11): "f0ad5c7d55e85f1ea5d50b1f83cfa1bd7eaa327e23f4dd7e4680052fec3655fe",
}
OLD_GIVEN_GEOMETRY = "5fc73eb636191579b9f0c5ca6624a53fd8ab1751ab0d163ada6c0448f1aa8e21"
# make_synthetic(num_images=10, image_size=64, height=48, seed=7, lesion_masks=True): train.csv,
# then each row's decoded photograph and mask.
OLD_APTOS_SET = "1c4d726ce1ddb27d6fcd550a3ae6d0217f96e161d4b23d3b349dc98fbb4f2747"


@pytest.mark.parametrize("case", sorted(OLD_RENDERS))
def test_renders_without_a_look_are_byte_identical_to_before(case):
    grade, width, height, seed = case
    image, _, mask = render_fundus(
        grade, width, height, np.random.default_rng(seed), return_mask=True
    )
    assert hashlib.sha256(image.tobytes() + mask.tobytes()).hexdigest() == OLD_RENDERS[case]


def test_render_with_given_geometry_is_byte_identical_to_before():
    geo = FundusGeometry(50, 40, 30)
    image, _ = render_fundus(2, 100, 80, np.random.default_rng(0), geometry=geo)
    assert hashlib.sha256(image.tobytes()).hexdigest() == OLD_GIVEN_GEOMETRY


def test_aptos_set_is_byte_identical_to_before(tmp_path):
    folder = make_synthetic(
        tmp_path / "s", num_images=10, image_size=64, height=48, seed=7, lesion_masks=True
    )
    digest = hashlib.sha256((folder / "train.csv").read_bytes())
    with open(folder / "train.csv", newline="") as f:
        for row in list(csv.reader(f))[1:]:
            for sub in ("train_images", "lesion_masks"):
                path = folder / sub / f"{row[0]}.png"
                digest.update(cv2.imread(str(path), cv2.IMREAD_UNCHANGED).tobytes())
    assert digest.hexdigest() == OLD_APTOS_SET
