"""Exporting a trained grader for runtimes other than PyTorch (`dr-hf export`)."""

from dr_hf.export.onnx import OPSET, PARITY_TOLERANCE, OnnxExport, ParityError, export_onnx
from dr_hf.export.quantize import QWK_TOLERANCE, QuantizationError

__all__ = [
    "OPSET",
    "PARITY_TOLERANCE",
    "QWK_TOLERANCE",
    "OnnxExport",
    "ParityError",
    "QuantizationError",
    "export_onnx",
]
