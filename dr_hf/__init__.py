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


def _register_processor() -> None:
    """Let `AutoImageProcessor` (and so `pipeline()`) find `FundusImageProcessor` by the name a
    model folder's preprocessor_config.json gives, without `trust_remote_code`."""
    from transformers import AutoImageProcessor, PretrainedConfig

    from dr_hf.data.fundus_processor import FundusImageProcessor

    class FundusImageProcessorConfig(PretrainedConfig):
        model_type = "dr_hf_fundus"  # a registry key only: graders keep TimmWrapperConfig

    AutoImageProcessor.register(
        FundusImageProcessorConfig,
        image_processor_classes={"torchvision": FundusImageProcessor, "pil": FundusImageProcessor},
        exist_ok=True,
    )


_register_processor()
