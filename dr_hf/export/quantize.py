"""int8 quantisation of an exported model, chosen per architecture family, and what it costs.

What gains on a CPU depends on the network, so the family is read from the graph itself: where
convolutions hold most of the weights (resnet, efficientnet, ...) the model is quantised
statically (QDQ: int8 weights per output channel, uint8 activations whose ranges are calibrated
on photographs), which onnxruntime runs as QLinearConv, about twice the fp32 speed on this
project's 2-core AVX2 CPU. Dynamic quantisation of convolutions (ConvInteger) is three times
*slower* than fp32 there, so convolutions are never quantised dynamically. Where matrix products
hold most of the weights (ViTs, RETFound) only MatMul and Gemm are quantised, dynamically, per
output channel (more accurate than per tensor on ViT-L): static quantisation of a ViT's
activations (softmax, GELU, LayerNorm outputs) moves its probabilities far more.
onnxruntime's `quant_pre_process` was measured and left out: the dynamo exporter already folds
batch norm into the convolutions, and it changed neither speed nor accuracy.

The export measures the change against the fp32 model before keeping it: the largest
probability difference on the parity photographs, and, on a labelled set, QWK and referable
AUROC of both; a QWK drop beyond the tolerance refuses the quantised model.
"""

from pathlib import Path

import numpy as np

from dr_hf.config.arguments import DataArguments
from dr_hf.config.command_arguments import QUANTIZATIONS, QWK_TOLERANCE
from dr_hf.data.fundus_render import render_fundus
from dr_hf.data.multisource import common_prepare_info
from dr_hf.evaluation.evaluate import check_graded, load_eval_split
from dr_hf.inference import grade
from dr_hf.inference.grader import Grader, grade_rule_for
from dr_hf.metrics.functional import quadratic_weighted_kappa, referable_auroc

# onnxruntime's calibrator holds every activation of every calibration photograph at once (its
# CalibMaxIntermediateOutputs option discards data in 1.32): 32 keeps resnet50 at 224 px within a
# few GB; 128 halved the probability change on the quick start's model.
CALIBRATION_IMAGES = 32
CONVOLUTIONAL, TRANSFORMER = "convolutional", "transformer"


class QuantizationError(ValueError):
    """The quantised model grades the labelled set worse than the tolerance allows."""


def weight_shares(file: Path) -> dict[str, float]:
    """Share of the graph's weights (initializer elements) read by Conv, and by MatMul and Gemm."""
    import onnx

    graph = onnx.load(str(file)).graph
    sizes = {tensor.name: int(np.prod(tensor.dims)) for tensor in graph.initializer}
    counts = {"Conv": 0, "MatMul": 0, "Gemm": 0}
    for node in graph.node:
        if node.op_type in counts:
            counts[node.op_type] += sum(sizes.get(name, 0) for name in node.input)
    total = sum(counts.values()) or 1
    return {
        "Conv": counts["Conv"] / total,
        "MatMul, Gemm": (counts["MatMul"] + counts["Gemm"]) / total,
    }


def family(file: Path) -> str:
    """`convolutional` where Conv nodes hold most of the weights, else `transformer`."""
    return CONVOLUTIONAL if weight_shares(file)["Conv"] > 0.5 else TRANSFORMER


def calibration_pixels(
    grader: Grader, data: str | Path | None, count: int = CALIBRATION_IMAGES
) -> tuple[np.ndarray, str]:
    """Normalised inputs (N, 3, side, side) on which static quantisation sets activation ranges:
    the first `count` photographs of the labelled set `data` where one is given (the kind of
    photograph the model grades), else `count` synthetic photographs; and where they came from."""
    if data is not None:
        data_args = DataArguments(data_dir=str(data))
        dataset = load_eval_split(data_args, "all")
        grader = grader.for_prepared(common_prepare_info(data_args.data_dir))
        images = dataset.select(range(min(count, len(dataset))))["image"]
        source = f"the first {len(images)} photographs of {data}"
    else:
        side = max(2 * grader.processor.input_side, 64)
        rng = np.random.default_rng(1)
        images = [render_fundus(i % 5, side, side, rng)[0] for i in range(count)]
        source = f"{count} synthetic photographs"
    return np.stack([grader.view(image)[1].numpy() for image in images]), source


def quantize_int8(source: Path, target: Path, fp32: Grader, data: str | Path | None) -> dict:
    """`target`: `source` in int8 by the scheme of its family (see the module docstring),
    calibrated where static through `fp32`'s processor on `data` (see `calibration_pixels`);
    returns the settings, which quantization.json records."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )

    kind = family(source)
    if kind == CONVOLUTIONAL:
        pixels, origin = calibration_pixels(fp32, data)

        class Photographs(CalibrationDataReader):
            def __init__(self):
                self.items = iter({fp32.model.input_name: pixel[None]} for pixel in pixels)

            def get_next(self) -> dict | None:
                return next(self.items, None)

        quantize_static(
            str(source),
            str(target),
            Photographs(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
        )
        return {
            "family": kind,
            "method": "onnxruntime.quantization.quantize_static, QDQ, min-max calibration",
            "op_types": "every one onnxruntime quantises (Conv, Gemm, MatMul, pooling, Add, ...)",
            "weights": "int8, per output channel",
            "activations": "uint8, ranges calibrated once",
            "calibration": origin,
        }
    op_types = ["MatMul", "Gemm"]
    quantize_dynamic(
        str(source),
        str(target),
        op_types_to_quantize=op_types,
        per_channel=True,
        weight_type=QuantType.QInt8,
    )
    return {
        "family": kind,
        "method": "onnxruntime.quantization.quantize_dynamic",
        "op_types": op_types,
        "weights": "int8, per output channel",
        "activations": "uint8, ranges computed per batch at run time",
        "calibration": None,
    }


def labelled_change(fp32: Grader, int8: Grader, data_dir: str | Path) -> dict:
    """QWK (grades by the model's saved rule) and referable AUROC of both models on the labelled
    set in `data_dir` (every image), and the QWK drop and AUROC change of the quantised one."""
    data_args = DataArguments(data_dir=str(data_dir))
    dataset = load_eval_split(data_args, "all")
    prepared = common_prepare_info(data_args.data_dir)
    graders = [fp32.for_prepared(prepared), int8.for_prepared(prepared)]
    graded = check_graded(grade(graders, dataset, progress=None, quality=False))
    labels = np.asarray(dataset["label"], dtype=np.int64)
    rule = grade_rule_for(fp32)  # the model's saved rule: both copies decide by it
    figures = {}
    for name, member in zip(("fp32", "int8"), graded.members):
        outputs = member["plain"].astype(np.float64)
        figures[name] = {
            "qwk": quadratic_weighted_kappa(labels, rule.grades(outputs)),
            "referable_auroc": referable_auroc(outputs, labels),
        }
    return {
        "data": str(data_dir),
        "images": len(labels),
        **figures,
        "qwk_drop": figures["fp32"]["qwk"] - figures["int8"]["qwk"],
        "referable_auroc_change": figures["int8"]["referable_auroc"]
        - figures["fp32"]["referable_auroc"],
    }


def check_qwk(report: dict, tolerance: float) -> None:
    """Raise QuantizationError, with the figures, when the QWK drop exceeds `tolerance`."""
    labelled = report.get("labelled")
    if labelled and not labelled["qwk_drop"] <= tolerance:
        raise QuantizationError(
            f"int8 quantisation drops QWK by {labelled['qwk_drop']:.4f} on {labelled['data']} "
            f"(fp32 {labelled['fp32']['qwk']:.4f}, int8 {labelled['int8']['qwk']:.4f}; referable "
            f"AUROC change {labelled['referable_auroc_change']:+.4f}), beyond the tolerance "
            f"{tolerance:g}: nothing written. Export without --quantize."
        )


__all__ = [
    "CALIBRATION_IMAGES",
    "QUANTIZATIONS",
    "QWK_TOLERANCE",
    "QuantizationError",
    "calibration_pixels",
    "family",
    "labelled_change",
    "quantize_int8",
    "weight_shares",
]
