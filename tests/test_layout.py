"""The package's shape: imports run one way between layers, and one path turns photographs into
model inputs at inference.

Layers, lowest first: errors, grades, the grading rule, config, metrics and the run folder; data
and models; training, inference and evaluation (which grades through inference); the command
line, the export and the demo page on top. A module may import its own layer and those below it,
never one above. (The benchmark harness, scripts/benchmarks/, imports dr_hf as users do.)
"""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "dr_hf"
LAYERS = {
    "errors": 0, "grades": 0, "grading_rule": 0, "config": 0, "metrics": 0, "run_folder": 0,
    "predictions": 0,
    "data": 1, "models": 1,
    "training": 2, "evaluation": 2, "inference": 2,
    "cli": 3, "demo": 3, "export": 3, "__init__": 3,
}  # fmt: skip


def modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def concern(module: str) -> str:
    """`dr_hf.data.loading` -> `data`; `dr_hf` itself -> `__init__`."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def dr_hf_imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("dr_hf"):
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names if alias.name.startswith("dr_hf"))
    return names


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_every_concern_has_a_layer():
    found = {concern(module_name(path)) for path in modules()}
    assert found <= set(LAYERS), f"place {sorted(found - set(LAYERS))} in LAYERS"


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_import_from_a_higher_layer(path):
    own = concern(module_name(path))
    upward = [name for name in dr_hf_imports(path) if LAYERS[concern(name)] > LAYERS[own]]
    assert not upward, f"{path.name} ({own}) imports from a higher layer: {upward}"


# Within the middle layer, who may not import whom: evaluation grades through inference, but
# inference serves evaluation, the command line and the demo alike, and training knows neither.
FORBIDDEN_NEIGHBOURS = {
    "training": {"evaluation", "inference"},
    "evaluation": {"training"},
    "inference": {"training", "evaluation"},
}


def test_training_evaluation_and_inference_import_only_downward_of_each_other():
    for path in modules():
        own = concern(module_name(path))
        forbidden = FORBIDDEN_NEIGHBOURS.get(own, set())
        assert not [n for n in dr_hf_imports(path) if concern(n) in forbidden], path


# The one inference path: turning a photograph into a model input (decoding it upright, reducing,
# cropping, resizing, normalising) at inference happens in `dr_hf.inference` through the model's
# FundusImageProcessor, nowhere else. The data layer owns these steps (the processor, training's
# FundusTransform, `dr-hf prepare`, the gradeability check); training feeds them to the Trainer.
IMAGE_TO_TENSOR = {
    "model_input", "normalize", "as_rgb_array", "preprocess_fundus", "exif_transpose",
    "pixels", "preprocess", "FundusTransform",
}  # fmt: skip
MAY_TURN_IMAGES_INTO_TENSORS = {"inference", "data", "training"}


def image_to_tensor_calls(tree: ast.AST) -> list[str]:
    """`name (line N)` of each call of an IMAGE_TO_TENSOR function or method in `tree`."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
            if name in IMAGE_TO_TENSOR:
                found.append(f"{name} (line {node.lineno})")
    return found


def test_the_image_to_tensor_check_sees_a_second_path():
    """The check below would catch what the demo and heatmaps used to do by hand."""
    by_hand = "view = grader.processor.pixels(image)\nx = normalize(view, mean, std)"
    assert image_to_tensor_calls(ast.parse(by_hand)) == ["pixels (line 1)", "normalize (line 2)"]
    through_inference = "view, pixel_values = grader.view(open_image(path))"
    assert image_to_tensor_calls(ast.parse(through_inference)) == []


def modules_outside_the_image_path() -> list[Path]:
    return [p for p in modules() if concern(module_name(p)) not in MAY_TURN_IMAGES_INTO_TENSORS]


def test_the_image_to_tensor_check_covers_every_other_concern():
    checked = {concern(module_name(p)) for p in modules_outside_the_image_path()}
    assert checked == set(LAYERS) - MAY_TURN_IMAGES_INTO_TENSORS


@pytest.mark.parametrize(
    "path", modules_outside_the_image_path(), ids=lambda p: str(p.relative_to(PACKAGE))
)
def test_only_the_inference_path_turns_photographs_into_model_inputs(path):
    calls = image_to_tensor_calls(ast.parse(path.read_text()))
    assert not calls, f"{path.name} makes model inputs itself: {calls}; use dr_hf.inference"


def test_inference_does_not_borrow_the_training_transform():
    for path in sorted((PACKAGE / "inference").rglob("*.py")):
        assert "FundusTransform" not in path.read_text(), (
            f"{path.name}: FundusTransform is training's"
        )
