"""The package's shape: imports run one way between layers, and modules and functions stay short.

Layers, lowest first: errors, grades, config, metrics and the run folder; data and models; training
and evaluation; the command line, benchmarks the demo page and the `dr_hf.inference` import path on top. A module
may import its own layer and those below it, never one above.
"""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "dr_hf"
LAYERS = {
    "errors": 0, "grades": 0, "config": 0, "metrics": 0, "run_folder": 0, "predictions": 0,
    "data": 1, "models": 1,
    "training": 2, "evaluation": 2,
    "cli": 3, "benchmarks": 3, "demo": 3, "inference": 3, "__init__": 3,
}  # fmt: skip
MAX_MODULE_LINES = 300
MAX_FUNCTION_LINES = 60


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


def test_training_and_evaluation_do_not_import_each_other():
    for path in modules():
        own = concern(module_name(path))
        if own in ("training", "evaluation"):
            other = {"training": "evaluation", "evaluation": "training"}[own]
            assert not [n for n in dr_hf_imports(path) if concern(n) == other], path


def test_modules_and_functions_are_short():
    long = []
    for path in modules():
        source = path.read_text()
        if len(source.splitlines()) > MAX_MODULE_LINES:
            long.append(f"{path.name}: {len(source.splitlines())} lines")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                size = node.end_lineno - node.lineno + 1
                if size > MAX_FUNCTION_LINES:
                    long.append(f"{path.name}:{node.lineno} {node.name}: {size} lines")
    assert not long, long
