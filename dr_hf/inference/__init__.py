"""Grading photographs with trained models: the one inference path.

A `Grader` is a model with the `FundusImageProcessor` it was trained with (`grader`); `grade` is
the loop every caller runs, one model being an ensemble of one (`grade`); `predict` adds the
grading rule (`grade_rule_for`: argmax or cut points) and the referable decision, and returns a
`PredictionResult`, the rows `dr-hf predict` writes (`results`);
`named_models` reads which models the command line names (`models`); `stream_predictions` writes
an archive's rows batch by batch and resumes a killed run (`archive`). A folder
`dr-hf export --format onnx` wrote loads as a grader whose model is run by onnxruntime
(`onnx_model`; `onnx_runtime` grades such a folder without torch). `dr-hf predict`,
`dr-hf evaluate`, the demo page, Grad-CAM figures and the benchmarks all grade through here, and
nothing else turns a photograph into a model input at inference.

    from dr_hf.inference import predict
    predict("outputs/run/best", ["photo.png", "folder/"]).save("grades.csv")
"""

from dr_hf.inference.grade import TTA_VIEWS, Grading, grade, grade_batch, grade_stream, open_image
from dr_hf.inference.grader import (
    OPERATING_POINTS,
    Grader,
    decision_rule,
    grade_rule_for,
    load_grader,
    load_graders,
    load_processor,
)
from dr_hf.inference.models import is_model_folder, named_models
from dr_hf.inference.predict import as_graders, predict, predict_stream
from dr_hf.inference.results import PROB_COLUMNS, Missing, PredictionResult, collect_inputs

__all__ = [
    "OPERATING_POINTS",
    "PROB_COLUMNS",
    "TTA_VIEWS",
    "Grader",
    "Grading",
    "Missing",
    "PredictionResult",
    "as_graders",
    "collect_inputs",
    "decision_rule",
    "grade",
    "grade_batch",
    "grade_rule_for",
    "grade_stream",
    "is_model_folder",
    "load_grader",
    "load_graders",
    "load_processor",
    "named_models",
    "open_image",
    "predict",
    "predict_stream",
]
