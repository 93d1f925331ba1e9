"""How good a trained grader is: `dr-hf evaluate` and `dr-hf compare`.

`evaluate` scores a held-out set with the clinical metrics and writes its report (`report`,
figures in `plots`); an ensemble's report adds its members' metrics (`ensemble`); Grad-CAM
figures of chosen cases come from `explain` and `heatmaps`; `compare` sets reports side by side.
Grading itself is `dr_hf.inference`'s.
"""

from dr_hf.evaluation.evaluate import EvaluateArguments, evaluate_model

__all__ = ["EvaluateArguments", "evaluate_model"]
