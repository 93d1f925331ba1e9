import os
import tempfile

# Offline and quiet before anything imports the stack.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Caches (evaluate modules, datasets) and W&B files go to a throw-away folder, not ~.
_scratch = tempfile.mkdtemp(prefix="dr_hf_tests_")
os.environ["HF_HOME"] = os.path.join(_scratch, "hf")
for _name in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR"):
    os.environ[_name] = os.path.join(_scratch, "wandb")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def synthetic_dir(tmp_path_factory):
    """A small synthetic APTOS-layout set shared by the end-to-end tests (60 images, 64 px)."""
    from dr_hf.synthetic import make_synthetic

    return make_synthetic(
        tmp_path_factory.mktemp("synthetic") / "aptos", num_images=60, image_size=64, seed=0
    )
