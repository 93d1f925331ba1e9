"""Using a trained grader: `dr-hf evaluate` and `dr-hf predict`.

`predict` loads a saved grader with the preprocessing it was trained with and grades photographs
in batches (optionally with TTA); `prediction_io` gathers the inputs and writes the grades out.
`evaluate` scores a held-out set with the clinical metrics and writes its report (`report`,
figures in `plots`).
"""

from dr_hf.evaluation.evaluate import EvaluateArguments, evaluate_model
from dr_hf.evaluation.predict import Grader, grade_batch, load_grader, predict

__all__ = [
    "EvaluateArguments",
    "Grader",
    "evaluate_model",
    "grade_batch",
    "load_grader",
    "predict",
]
