"""Exporting a trained grader for runtimes other than PyTorch (`dr-hf export`)."""

from dr_hf.export.onnx import OPSET, PARITY_TOLERANCE, OnnxExport, ParityError, export_onnx

__all__ = ["OPSET", "PARITY_TOLERANCE", "OnnxExport", "ParityError", "export_onnx"]
