"""Dynamic int8 quantisation of an exported model, and what it costs.

onnxruntime's `quantize_dynamic` stores the weights as int8 and quantises activations on the
fly. The export measures the change against the fp32 model before keeping it: the largest
probability difference on the parity photographs, and, on a labelled set, QWK and referable
AUROC of both; a QWK drop beyond the tolerance refuses the quantised model.
"""

from pathlib import Path

import numpy as np

from dr_hf.config.arguments import DataArguments
from dr_hf.data.multisource import common_prepare_info
from dr_hf.evaluation.evaluate import check_graded, load_eval_split
from dr_hf.inference import grade
from dr_hf.inference.grader import Grader
from dr_hf.metrics.functional import quadratic_weighted_kappa, referable_auroc

QWK_TOLERANCE = 0.005
QUANTIZATIONS = ("int8",)


class QuantizationError(ValueError):
    """The quantised model grades the labelled set worse than the tolerance allows."""


def quantize_int8(source: Path, target: Path) -> None:
    """`target`: `source` with int8 weights (onnxruntime's dynamic quantisation)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8)


def labelled_change(fp32: Grader, int8: Grader, data_dir: str | Path) -> dict:
    """QWK and referable AUROC of both models on the labelled set in `data_dir` (every image),
    and the QWK drop and AUROC change of the quantised one."""
    data_args = DataArguments(data_dir=str(data_dir))
    dataset = load_eval_split(data_args, "all")
    prepared = common_prepare_info(data_args.data_dir)
    graders = [fp32.for_prepared(prepared), int8.for_prepared(prepared)]
    graded = check_graded(grade(graders, dataset, progress=None, quality=False))
    labels = np.asarray(dataset["label"], dtype=np.int64)
    figures = {}
    for name, member in zip(("fp32", "int8"), graded.members):
        probs = member["plain"].astype(np.float64)
        figures[name] = {
            "qwk": quadratic_weighted_kappa(labels, probs.argmax(axis=1)),
            "referable_auroc": referable_auroc(probs, labels),
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
    "QUANTIZATIONS",
    "QWK_TOLERANCE",
    "QuantizationError",
    "labelled_change",
    "quantize_int8",
]
