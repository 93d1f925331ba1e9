"""dr_hf: diabetic retinopathy graders on the Hugging Face stack."""

import os

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from dr_hf.grades import GRADE_NAMES, NUM_GRADES, REFERABLE_MIN_GRADE  # noqa: E402

__version__ = "0.1.0"

__all__ = ["GRADE_NAMES", "NUM_GRADES", "REFERABLE_MIN_GRADE", "__version__", "train"]


def __getattr__(name: str):
    # Keep `import dr_hf` light: the training stack loads on first use.
    if name == "train":
        from dr_hf.training.run import train

        return train
    raise AttributeError(f"module 'dr_hf' has no attribute {name!r}")
