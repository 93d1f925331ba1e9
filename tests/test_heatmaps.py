"""Grad-CAM heatmaps: maps and figures for a CNN, a ViT and a LoRA adapter, the model left as it
was, determinism, and the pointing game on hand-made maps and masks."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from benchmarks.pointing import pointing_game, random_point_baseline
from dr_hf.config.arguments import ModelArguments
from dr_hf.evaluation.heatmaps import (
    DPI,
    FIGSIZE,
    gradcam,
    heatmaps_for,
    overlay,
    target_layer,
    write_heatmap,
)
from dr_hf.inference import grade_batch, load_grader
from dr_hf.models.graders import create_model

KINDS = ("cnn", "vit", "lora")
PNG_SIZE = (round(FIGSIZE[0] * DPI), round(FIGSIZE[1] * DPI))


@pytest.fixture(scope="module")
def images(synthetic_dir):
    """Four synthetic photographs (64 px) and their names."""
    paths = sorted((synthetic_dir / "train_images").glob("*.png"))[:4]
    return [Image.open(path).convert("RGB") for path in paths], [path.stem for path in paths]


@pytest.fixture(scope="module")
def graders(trained_run, trained_lora_run):
    """A trained test_resnet, a random retfound_tiny at 64 px (4 x 4 patches) and a LoRA adapter
    on retfound_tiny, loaded as for inference (every weight frozen)."""
    torch.manual_seed(0)
    vit = create_model(ModelArguments(model_name="retfound_tiny"), image_size=64)[0]
    return {
        "cnn": load_grader(trained_run[0] / "best", device="cpu"),
        "vit": load_grader(vit, device="cpu"),
        "lora": load_grader(trained_lora_run[0] / "best", device="cpu"),
    }


def pixel_values(grader, images):
    return grader.processor(images, return_tensors="pt")["pixel_values"]


def flags(model):
    return [p.requires_grad for p in model.parameters()], [m.training for m in model.modules()]


@pytest.mark.parametrize("kind", KINDS)
def test_maps_are_scaled_at_input_size_and_deterministic(graders, images, kind):
    grader = graders[kind]
    x = pixel_values(grader, images[0])
    side = grader.processor.input_side
    maps = gradcam(grader, x)
    assert maps.shape == (4, side, side) and maps.dtype == np.float32
    assert maps.min() >= 0 and maps.max() <= 1
    assert any(np.ptp(m) > 0.5 for m in maps), "every map is flat"
    np.testing.assert_array_equal(gradcam(grader, x), maps)
    # Two batches: the same maps up to float rounding (batched kernels may sum differently).
    np.testing.assert_allclose(gradcam(grader, x, batch_size=3), maps, atol=1e-5)
    for photo, heatmap in zip(images[0], maps):
        blended = overlay(grader.processor.pixels(photo), heatmap)
        assert blended.shape == (side, side, 3) and blended.dtype == np.uint8


@pytest.mark.parametrize("kind", KINDS)
def test_default_targets_are_the_predicted_grades(graders, images, kind):
    grader = graders[kind]
    x = pixel_values(grader, images[0])
    predicted = grade_batch(grader, x)[0].argmax(dim=1).tolist()
    np.testing.assert_array_equal(gradcam(grader, x, targets=predicted), gradcam(grader, x))
    others = [(grade + 1) % 5 for grade in predicted]
    assert not np.array_equal(gradcam(grader, x, targets=others), gradcam(grader, x))


@pytest.mark.parametrize("kind", KINDS)
def test_model_flags_are_restored(graders, images, kind):
    """Train mode and a mixed requires_grad pattern survive Grad-CAM (which sets eval mode and
    freezes the weights while it runs)."""
    model = graders[kind].model
    before = flags(model)
    try:
        model.train()
        for index, parameter in enumerate(model.parameters()):
            parameter.requires_grad_(index % 2 == 0)
        changed = flags(model)
        gradcam(graders[kind], pixel_values(graders[kind], images[0][:2]))
        assert flags(model) == changed
        assert not any(p.grad is not None for p in model.parameters())
    finally:
        for parameter, flag in zip(model.parameters(), before[0]):
            parameter.requires_grad_(flag)
        model.eval()
    assert flags(model) == before


def test_gradients_flow_with_every_weight_frozen(graders, images):
    grader = graders["vit"]
    x = pixel_values(grader, images[0])
    trainable = gradcam(grader, x)
    assert all(p.requires_grad for p in grader.model.parameters())
    grader.model.requires_grad_(False)
    try:
        np.testing.assert_array_equal(gradcam(grader, x), trainable)
    finally:
        grader.model.requires_grad_(True)
    assert not any(p.requires_grad for p in graders["lora"].model.parameters())


def test_target_layers(graders):
    assert target_layer(graders["cnn"].model, 224)[0] == "layer4"
    assert target_layer(graders["cnn"].model, 32)[0] == "layer3"  # layer4 would be 1 x 1
    for kind in ("vit", "lora"):
        name, layer, reshape = target_layer(graders[kind].model, 48)
        assert name == "blocks.1.norm1" and isinstance(layer, torch.nn.LayerNorm)
        side = 4 if kind == "vit" else 2
        tokens = torch.arange(2 * (1 + side * side) * 4.0).reshape(2, 1 + side * side, 4)
        grid = reshape(tokens)
        assert grid.shape == (2, 4, side, side)
        assert torch.equal(grid[1, :, 0, 1], tokens[1, 2])  # cls token dropped, row-major


@pytest.mark.parametrize("kind", KINDS)
def test_heatmaps_for_writes_one_png_per_image(graders, images, kind, tmp_path):
    photos, names = images
    first = heatmaps_for(graders[kind], photos, tmp_path / "a", names, batch_size=3)
    second = heatmaps_for(graders[kind], [np.asarray(p) for p in photos], tmp_path / "b", names)
    assert [path.name for path in first] == [f"{name}.png" for name in names]
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == sorted(p.name for p in first)
    for one, two in zip(first, second):
        assert Image.open(one).size == PNG_SIZE
        assert one.read_bytes() == two.read_bytes()
    with pytest.raises(ValueError, match="distinct names"):
        heatmaps_for(graders[kind], photos, tmp_path / "c", names[:1] * 4)


def test_write_heatmap_needs_one_probability_per_grade(tmp_path):
    image, heatmap = np.zeros((16, 16, 3), np.uint8), np.zeros((16, 16), np.float32)
    with pytest.raises(ValueError, match="probabilities"):
        write_heatmap(tmp_path / "x.png", image, heatmap, probabilities=np.ones(3) / 3)
    path = write_heatmap(tmp_path / "x.png", image, heatmap, probabilities=np.eye(5)[2])
    assert Image.open(path).size == PNG_SIZE


def test_overlay_resizes_the_heatmap_and_colours_its_peak():
    image = np.full((8, 12, 3), 128, np.uint8)
    heatmap = np.zeros((4, 6), np.float32)
    heatmap[0, 0] = 1.0
    blended = overlay(image, heatmap)
    assert blended.shape == (8, 12, 3)
    assert blended[0, 0, 0] > blended[0, 0, 2]  # jet: red at the peak
    assert blended[-1, -1, 2] > blended[-1, -1, 0]  # blue where the map is zero


def peak_at(row, col, shape=(4, 4)):
    heatmap = np.zeros(shape, np.float32)
    heatmap[row, col] = 1.0
    return heatmap


def test_pointing_game_hits_and_misses():
    mask = np.zeros((1, 4, 4), bool)
    mask[0, 1:3, 1:3] = True
    assert pointing_game(peak_at(1, 2)[None], mask) == 1.0
    assert pointing_game(peak_at(3, 0)[None], mask) == 0.0


def test_pointing_game_exact_share_skipping_empty_masks():
    masks = np.zeros((4, 4, 4), np.uint8)
    masks[0, 0, :] = 1  # hit: peak (0, 3)
    masks[1, 3, 3] = 1  # miss: peak (0, 0)
    masks[2, :2, :2] = 1  # hit: peak (1, 1)
    heatmaps = np.stack([peak_at(0, 3), peak_at(0, 0), peak_at(1, 1), peak_at(2, 2)])
    assert pointing_game(heatmaps, masks) == pytest.approx(2 / 3)  # the 4th mask is empty
    assert random_point_baseline(masks) == pytest.approx((4 / 16 + 1 / 16 + 4 / 16) / 3)
    with pytest.raises(ValueError, match="empty"):
        pointing_game(heatmaps[3:], masks[3:])


def test_pointing_game_resizes_masks_with_nearest_neighbour():
    mask = np.zeros((1, 2, 2), bool)
    mask[0, 1, 1] = True  # the bottom-right quarter at 8 x 8
    assert pointing_game(peak_at(4, 4, (8, 8))[None], mask) == 1.0
    assert pointing_game(peak_at(3, 4, (8, 8))[None], mask) == 0.0
    assert random_point_baseline(mask, shape=(8, 8)) == pytest.approx(0.25)


def test_select_cases_picks_confident_errors_and_referrals():
    from dr_hf.evaluation.explain import select_cases

    probabilities = np.array(
        [
            [0.9, 0.1, 0.0, 0.0, 0.0],  # 0: right (grade 0)
            [0.1, 0.0, 0.8, 0.1, 0.0],  # 1: wrong, confident (true 0)
            [0.5, 0.4, 0.1, 0.0, 0.0],  # 2: wrong, less so (true 1)
            [0.0, 0.1, 0.2, 0.7, 0.0],  # 3: right referral (true 3), P(>=2) 0.9
            [0.0, 0.0, 0.3, 0.0, 0.7],  # 4: right referral (true 4), P(>=2) 1.0
            [0.0, 0.6, 0.4, 0.0, 0.0],  # 5: referable, missed (true 2)
        ]
    )
    labels = np.array([0, 0, 1, 3, 4, 2])
    assert select_cases(probabilities, labels, 2) == {"errors": [1, 5], "referable": [4, 3]}
    assert select_cases(probabilities, labels, 1) == {"errors": [1], "referable": [4]}


def test_predict_and_evaluate_write_heatmaps(trained_run, synthetic_dir, tmp_path):
    from dr_hf.cli import evaluate_main, predict_main

    best = trained_run[0] / "best"
    photos = sorted((synthetic_dir / "train_images").glob("*.png"))[:3]
    figures = tmp_path / "figures"
    argv = [*map(str, photos), "--model", str(best), "--output", str(tmp_path / "p.csv")]
    assert predict_main([*argv, "--heatmaps", str(figures)]) == 0
    assert sorted(p.name for p in figures.iterdir()) == sorted(p.name for p in photos)
    report = tmp_path / "report"
    argv = ["--model", str(best), "--data", str(synthetic_dir), "--output", str(report)]
    assert evaluate_main([*argv, "--bootstrap", "0", "--heatmaps", "2"]) == 0
    listed = json.loads((report / "metrics.json").read_text())["heatmaps"]
    for group in ("errors", "referable"):
        written = sorted(p.stem for p in (report / "heatmaps" / group).glob("*.png"))
        assert written == sorted(listed[group]) and len(written) <= 2
    assert listed["errors"]  # a 3-epoch tiny model makes mistakes on 60 images
