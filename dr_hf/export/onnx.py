"""`dr-hf export --format onnx`: a trained grader as a folder onnxruntime grades without torch.

The model (a LoRA adapter merged into its base first) is exported by `torch.onnx.export`'s
dynamo exporter (the TorchScript exporter where dynamo fails; `config.json` records which) with a
dynamic batch axis at opset `OPSET`. timm's fused attention (`scaled_dot_product_attention`)
exports as is: the parity check below is what guards it. Beside `model.onnx` go the processor
(`preprocessor_config.json` and its code), `config.json` (grades, operating points, the
runtime marker), the torch-free grading script and a model card section.

Parity: a few synthetic photographs are graded by both runtimes through the one grading loop;
probabilities further apart than `PARITY_TOLERANCE` refuse the export and nothing is written.
"""

import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from dr_hf.config.command_arguments import OPSET, PARITY_TOLERANCE
from dr_hf.data.fundus_render import render_fundus
from dr_hf.export.quantize import (
    QUANTIZATIONS,
    QWK_TOLERANCE,
    check_qwk,
    labelled_change,
    quantize_int8,
)
from dr_hf.grading_rule import head_of
from dr_hf.inference import grade, load_grader
from dr_hf.inference.grader import Grader
from dr_hf.inference.onnx_model import ONNX_RUNTIME, OnnxModel, is_onnx_folder
from dr_hf.inference.onnx_runtime import ONNX_FILE, RUNTIME_KEY
from dr_hf.models.parts import base_model
from dr_hf.run_folder import partial_folder, replace_with_partial

logger = logging.getLogger(__name__)

PARITY_IMAGES = 6
GRADING_SCRIPT = "dr_hf_onnx_grade.py"


class ParityError(ValueError):
    """The exported model's probabilities differ from PyTorch's by more than the tolerance."""


@dataclass
class OnnxExport:
    """What an export wrote and measured."""

    folder: Path
    exporter: str
    max_difference: float
    quantization: dict | None = None


class _Logits(torch.nn.Module):
    """The grader as a function of `pixel_values` returning logits: what ONNX records."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=pixel_values).logits


def merged(model: torch.nn.Module) -> torch.nn.Module:
    """A LoRA-adapted grader with its adapters merged into the base; any other as it is."""
    return model.merge_and_unload() if hasattr(model, "merge_and_unload") else model


def write_onnx(model: torch.nn.Module, side: int, file: Path, opset: int = OPSET) -> str:
    """Export `model` (input [batch, 3, side, side]) to `file`; returns the exporter used."""
    module = _Logits(model).eval()
    example = torch.randn(2, 3, side, side)
    names = {"input_names": ["pixel_values"], "output_names": ["logits"]}
    try:
        program = torch.onnx.export(
            module,
            (example,),
            dynamic_shapes=({0: torch.export.Dim("batch")},),
            opset_version=opset,
            dynamo=True,
            external_data=False,
            **names,
        )
        program.save(str(file), external_data=False)
        return "dynamo"
    except Exception as error:  # the dynamo exporter's failures have no common type
        logger.warning("The dynamo exporter failed (%s); using the TorchScript exporter.", error)
    torch.onnx.export(
        module,
        (example,),
        str(file),
        dynamic_axes={"pixel_values": {0: "batch"}, "logits": {0: "batch"}},
        opset_version=opset,
        dynamo=False,
        **names,
    )
    return "torchscript"


def parity_photographs(side: int, count: int = PARITY_IMAGES) -> list[np.ndarray]:
    """Synthetic fundus photographs of every grade, larger than the input (so the crop and the
    resize run as on real ones)."""
    rng = np.random.default_rng(0)
    return [
        render_fundus(grade % 5, max(2 * side, 64), max(2 * side, 64), rng)[0]
        for grade in range(count)
    ]


def probability_difference(torch_grader: Grader, onnx_grader: Grader, images: list) -> float:
    """Largest absolute difference of the two graders' probabilities of `images`, graded in one
    pass of the grading loop (batches of 4, so the batch axis varies)."""
    graded = grade([torch_grader, onnx_grader], images, batch_size=4, progress=False, quality=False)
    if graded.failures:
        raise RuntimeError(f"Parity photographs could not be graded: {graded.failures}")
    plain = [member["plain"].astype(np.float64) for member in graded.members]
    return float(np.abs(plain[0] - plain[1]).max())


def export_config(model: torch.nn.Module, exporter: str, opset: int) -> dict:
    """The grader's config.json (grades, operating points, processor name) marked as ONNX."""
    config = base_model(model).config.to_dict()
    config.pop("custom_pipelines", None)  # transformers' pipeline() runs PyTorch models only
    auto_map = config.get("auto_map") or {}
    config["auto_map"] = {k: v for k, v in auto_map.items() if k == "AutoImageProcessor"}
    config[RUNTIME_KEY] = ONNX_RUNTIME
    config["dr_hf_onnx"] = {
        "file": ONNX_FILE,
        "exporter": exporter,
        "opset": opset,
        "input": "pixel_values [batch, 3, side, side], normalised",
        "output": "logits [batch, 1]: the continuous grade"
        if head_of(base_model(model).config) == "regression"
        else "logits [batch, grades]; softmax gives the calibrated probabilities",
        "grade_rule": "dr_hf_grade_rule: argmax, or cut points on the expected grade (a "
        "regression model: on its output)",
        "decision_rule": "referable when P(grade >= 2) >= the operating point's threshold "
        "(dr_hf_operating_points), else when the predicted grade >= 2",
    }
    return config


MODEL_CARD = """# {name} (ONNX)

Exported by `dr-hf export --format onnx` from `{source}` with the {exporter} exporter
(`torch.onnx.export`), opset {opset}, dynamic batch axis. Input `pixel_values`
[batch, 3, {side}, {side}] made by the folder's processor (`preprocessor_config.json`,
`fundus_processor.py`, `preprocessing.py`); output `logits`: {output}. Grading rule:
config.json `dr_hf_grade_rule` (argmax, or cut points on the expected grade or the score).
Operating points: config.json `dr_hf_operating_points` (threshold on P(grade >= 2), or on the
score of a regression model).

Parity with PyTorch at export: largest probability difference {difference:.2e} on
{images} synthetic photographs (tolerance {tolerance:g}).

Grade with dr_hf: `dr-hf predict --model THIS_FOLDER photos/`. Without torch (onnxruntime,
NumPy, Pillow, OpenCV): `python {script} photo.png`.
"""


def export_onnx(
    model: str | Path,
    output: str | Path,
    retfound_weights: str | None = None,
    opset: int = OPSET,
    tolerance: float = PARITY_TOLERANCE,
    quantize: str | None = None,
    data: str | Path | None = None,
    qwk_tolerance: float = QWK_TOLERANCE,
) -> OnnxExport:
    """Export the model folder `model` to the new folder `output` (see the module docstring).

    With `quantize="int8"` the fp32 model passes the parity check, then its int8 version replaces
    it; the change (probabilities, and QWK and referable AUROC on the labelled set `data`) is
    written to `quantization.json`. Raises FileExistsError when `output` exists and is not empty,
    ParityError when the runtimes disagree by more than `tolerance`, QuantizationError when
    int8 drops QWK on `data` by more than `qwk_tolerance`: nothing is written then.
    """
    if quantize not in (None, *QUANTIZATIONS):
        raise ValueError(f"quantize={quantize!r}: choose one of {QUANTIZATIONS} or none.")
    if data is not None and quantize is None:
        raise ValueError("A labelled set (--data) measures quantisation: give --quantize int8.")
    if is_onnx_folder(model):
        raise ValueError(f"{model} is already an ONNX export: give the model folder it came from.")
    output = Path(output)
    if output.exists() and any(output.iterdir()):
        raise FileExistsError(f"{output} exists and is not empty: choose a new --output folder.")
    torch_grader = load_grader(model, retfound_weights, device="cpu")
    network = merged(torch_grader.model).eval()
    torch_grader.model = network
    side = torch_grader.processor.input_side
    partial = partial_folder(output)
    partial.mkdir(parents=True)
    try:
        exporter = write_onnx(network, side, partial / ONNX_FILE, opset)
        torch_grader.processor.save_pretrained(str(partial))
        config = export_config(network, exporter, opset)
        (partial / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        onnx_grader = Grader(OnnxModel(partial), torch_grader.processor, torch.device("cpu"))
        difference = probability_difference(torch_grader, onnx_grader, parity_photographs(side))
        logger.info("ONNX parity: largest probability difference %.2e.", difference)
        if not difference <= tolerance:
            raise ParityError(
                f"The exported model's probabilities differ from PyTorch's by {difference:.2e} "
                f"(tolerance {tolerance:g}): nothing written to {output}. Try the other exporter "
                "or another --opset."
            )
        quantization = None
        if quantize:
            quantization = quantized(partial, onnx_grader, side, data, qwk_tolerance)
            config["dr_hf_onnx"]["quantization"] = quantize
            (partial / "config.json").write_text(
                json.dumps(config, indent=2, sort_keys=True) + "\n"
            )
        script = Path(__file__).parents[1] / "inference" / "onnx_runtime.py"
        shutil.copyfile(script, partial / GRADING_SCRIPT)
        card = MODEL_CARD.format(
            name=Path(model).name,
            source=model,
            exporter=exporter,
            opset=opset,
            side=side,
            difference=difference,
            images=PARITY_IMAGES,
            tolerance=tolerance,
            script=GRADING_SCRIPT,
            output=config["dr_hf_onnx"]["output"],
        )
        if quantization:
            card += QUANTIZED_CARD.format(**quantization, **quantization["settings"])
        (partial / "README.md").write_text(card)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    replace_with_partial(output)  # an existing output folder is empty (checked above)
    return OnnxExport(output, exporter, difference, quantization)


QUANTIZED_CARD = """
The model is int8 ({family} family: {method}; weights {weights}, activations {activations}):
largest probability difference to the fp32 export {max_probability_difference:.2e}; see
`quantization.json` for the settings, and for QWK and referable AUROC on a labelled set where
one was given.
"""


def quantized(
    folder: Path, fp32: Grader, side: int, data: str | Path | None, qwk_tolerance: float
) -> dict:
    """Replace `folder`'s model.onnx by its int8 version once its change is measured and
    accepted; the figures, also written to quantization.json."""
    int8_file = folder / "model.int8.onnx"
    settings = quantize_int8(folder / ONNX_FILE, int8_file, fp32, data)
    int8 = Grader(OnnxModel(folder, file=int8_file), fp32.processor, fp32.device)
    report = {
        "settings": settings,
        "max_probability_difference": probability_difference(fp32, int8, parity_photographs(side)),
        "qwk_tolerance": qwk_tolerance,
        "fp32_bytes": (folder / ONNX_FILE).stat().st_size,
        "int8_bytes": int8_file.stat().st_size,
    }
    if data is not None:
        report["labelled"] = labelled_change(fp32, int8, data)
    logger.info("int8 quantisation: %s", report)
    check_qwk(report, qwk_tolerance)
    int8_file.replace(folder / ONNX_FILE)
    (folder / "quantization.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


__all__ = ["OPSET", "PARITY_TOLERANCE", "OnnxExport", "ParityError", "export_onnx"]
