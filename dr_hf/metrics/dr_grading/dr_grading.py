"""Diabetic retinopathy grading metrics as a local `evaluate` module.

What a user of the `evaluate` library gets: load it offline by path,
`evaluate.load(dr_hf.metrics.DR_GRADING_PATH)`, or instantiate `DRGrading()`. It returns
`dr_hf.metrics.compute_dr_metrics` of the accumulated predictions: the numbers `dr-hf evaluate`
and training report.
"""

import datasets
import evaluate
import numpy as np

from dr_hf.grades import NUM_GRADES
from dr_hf.metrics.headline import compute_dr_metrics

_DESCRIPTION = """
Metrics of a 5-grade diabetic retinopathy grader (0 no DR ... 4 proliferative DR): accuracy,
per-grade accuracy (recall), quadratic weighted kappa, macro F1, one-vs-rest macro AUROC, and
referable-DR (grade >= 2) AUROC, sensitivity and specificity, expected calibration error, the
screening operating points and the confusion matrix.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: one softmax probability vector of length 5 per image; the predicted grade is
        its argmax and P(grade >= 2) is the referable-DR score.
    references: the true grade (int 0-4) of each image.
Returns:
    accuracy: fraction of images graded exactly right (0-1).
    class_0_acc ... class_4_acc: fraction of each true grade graded right (recall, 0-1); nan for a
        grade absent from the references.
    qwk: quadratic weighted Cohen kappa over the 0-4 scale.
    macro_f1: F1 averaged over the grades present in references or predictions.
    macro_auroc: one-vs-rest AUROC averaged over the grades present; nan with one grade only.
    referable_auroc: AUROC of P(grade >= 2) for referable DR; nan unless both sides are present.
    referable_sensitivity, referable_specificity: at predicted grade >= 2 (fractions 0-1).
    ece: top-label expected calibration error (15 equal-width bins).
    referable_operating_points: per target specificity (spec_90, spec_95), the threshold on
        P(grade >= 2) with the sensitivity and specificity it reaches.
    confusion_matrix: 5x5 list of lists of counts, rows = true grade, columns = predicted grade.
Examples:
    >>> metric = DRGrading()
    >>> metric.compute(predictions=[[0.9, 0.1, 0, 0, 0]], references=[0])["accuracy"]
    1.0
"""

_CITATION = """
@article{cohen1968weighted,
  title={Weighted kappa: Nominal scale agreement provision for scaled disagreement or partial credit},
  author={Cohen, Jacob}, journal={Psychological Bulletin}, volume={70}, number={4}, year={1968}
}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class DRGrading(evaluate.Metric):
    """Diabetic retinopathy grading metrics from per-image grade probabilities."""

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Sequence(datasets.Value("float32"), length=NUM_GRADES),
                    "references": datasets.Value("int32"),
                }
            ),
        )

    def _compute(self, predictions, references):
        probabilities = np.asarray(predictions, dtype=np.float64)
        # float32 storage can leave rows a hair off 1; the softmax itself was checked upstream
        probabilities /= probabilities.sum(axis=1, keepdims=True)
        return compute_dr_metrics(probabilities, references)
