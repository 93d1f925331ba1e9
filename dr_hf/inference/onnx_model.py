"""An exported folder (`dr-hf export --format onnx`) as a model the grading loop can call.

`OnnxModel` answers `model(pixel_values=batch).logits` as a PyTorch grader does, running
onnxruntime (CUDA where its build has it, else the CPU), and carries the folder's config.json
as `config`, every key an attribute: the head (`dr_hf_head`), the grading rule and cut points
(`dr_hf_grade_rule`) and the operating points are read from it as from a PyTorch model's
config, so `Grader`, `grade`, `grade_rule_for` and `decision_rule` need no second path.
"""

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from dr_hf.inference.onnx_runtime import ONNX_FILE, RUNTIME_KEY, open_session

ONNX_RUNTIME = "onnx"


def is_onnx_folder(folder: str | Path) -> bool:
    """A folder `dr-hf export --format onnx` wrote: model.onnx and a config.json marking it."""
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        return False
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return False
    return config.get(RUNTIME_KEY) == ONNX_RUNTIME


class OnnxModel:
    """`model.onnx` of an exported folder behind the call signature of a PyTorch grader."""

    def __init__(self, folder: str | Path, threads: int | None = None, file: Path | None = None):
        self.folder = Path(folder)
        self.config = SimpleNamespace(**json.loads((self.folder / "config.json").read_text()))
        self.session = open_session(file or self.folder / ONNX_FILE, threads)
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, pixel_values: torch.Tensor) -> SimpleNamespace:
        batch = pixel_values.detach().cpu().numpy().astype(np.float32, copy=False)
        (logits,) = self.session.run(None, {self.input_name: np.ascontiguousarray(batch)})
        return SimpleNamespace(logits=torch.from_numpy(logits))

    def to(self, device) -> "OnnxModel":
        """The session picked its provider itself; inputs arrive on the CPU."""
        return self

    def eval(self) -> "OnnxModel":
        return self


__all__ = ["ONNX_RUNTIME", "OnnxModel", "is_onnx_folder"]
