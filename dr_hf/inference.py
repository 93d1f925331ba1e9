"""Grading photographs from Python: `predict`, `load_grader`, `Grader`.

The implementation lives in `dr_hf.evaluation.predict`; this module keeps the short import path
`from dr_hf.inference import predict`.
"""

from dr_hf.evaluation.predict import Grader, grade_batch, load_grader, predict

__all__ = ["Grader", "grade_batch", "load_grader", "predict"]
