"""dr_hf: diabetic retinopathy graders on the Hugging Face stack.

`import dr_hf` is light (no torch, transformers or OpenCV): the training stack loads when a name
that needs it is first used. `FundusImageProcessor` is registered with transformers'
`AutoImageProcessor` the moment transformers loads its image-processor registry (at once when it
already has), so that in a process that imported dr_hf `AutoImageProcessor.from_pretrained` and
`pipeline()` find it by the name a model folder's `preprocessor_config.json` gives, without
`trust_remote_code`.
"""

import os
import sys
from importlib.abc import Loader, MetaPathFinder

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from dr_hf.grades import GRADE_NAMES, NUM_GRADES, REFERABLE_MIN_GRADE  # noqa: E402

__version__ = "0.1.0"

__all__ = ["GRADE_NAMES", "NUM_GRADES", "REFERABLE_MIN_GRADE", "__version__", "train"]

AUTO_IMAGE_PROCESSOR_MODULE = "transformers.models.auto.image_processing_auto"


def __getattr__(name: str):
    # Keep `import dr_hf` light: the training stack loads on first use.
    if name == "train":
        from dr_hf.training.run import train

        return train
    raise AttributeError(f"module 'dr_hf' has no attribute {name!r}")


def register_processor() -> None:
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


class _RegisterAfterLoading(Loader):
    """Runs the real loader of transformers' image-processor registry, then registers ours."""

    def __init__(self, loader: Loader):
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module) -> None:
        self.loader.exec_module(module)
        register_processor()


class _RegistryWatch(MetaPathFinder):
    """Finds nothing itself: hands the registry module's spec to `_RegisterAfterLoading`, once."""

    def find_spec(self, name, path, target=None):
        if name != AUTO_IMAGE_PROCESSOR_MODULE:
            return None
        sys.meta_path.remove(self)
        for finder in sys.meta_path:
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                if spec.loader is not None:
                    spec.loader = _RegisterAfterLoading(spec.loader)
                return spec
        return None


if AUTO_IMAGE_PROCESSOR_MODULE in sys.modules:
    register_processor()
elif not any(isinstance(finder, _RegistryWatch) for finder in sys.meta_path):
    sys.meta_path.insert(0, _RegistryWatch())
