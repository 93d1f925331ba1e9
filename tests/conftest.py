import atexit
import os
import shutil
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
atexit.register(shutil.rmtree, _scratch, ignore_errors=True)  # removed when the run ends
os.environ["HF_HOME"] = os.path.join(_scratch, "hf")
os.environ["XDG_CACHE_HOME"] = os.path.join(_scratch, "cache")  # dr-hf train --help's saved page
for _name in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR"):
    os.environ[_name] = os.path.join(_scratch, "wandb")

import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run fastest on one thread; two threads on a busy 2-core machine spin."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def synthetic_dir(tmp_path_factory):
    """A small synthetic APTOS-layout set shared by the end-to-end tests (60 images, 64 px)."""
    from dr_hf.data.synthetic import make_synthetic

    return make_synthetic(
        tmp_path_factory.mktemp("synthetic") / "aptos", num_images=60, image_size=64, seed=0
    )


def tiny_config(data_dir, output_dir, **overrides) -> dict:
    """Field values of a seconds-long CPU training run on a tiny timm model."""
    values = {
        "data_dir": str(data_dir),
        "image_size": 32,
        "model_name": "test_resnet",
        "output_dir": str(output_dir),
        "num_train_epochs": 3,
        "per_device_train_batch_size": 8,
        "per_device_eval_batch_size": 16,
        "learning_rate": 3e-3,
        "dataloader_num_workers": 0,
        "use_cpu": True,
        "seed": 0,
        "disable_tqdm": True,
    }
    values.update(overrides)
    return values


@pytest.fixture(scope="session")
def trained_run(synthetic_dir, tmp_path_factory):
    """A full fine-tune of test_resnet for 3 epochs: (output_dir, history)."""
    from dr_hf.config.parsing import config_from_dict
    from dr_hf.training.run import run_training

    output_dir = tmp_path_factory.mktemp("run") / "out"
    history = run_training(*config_from_dict(tiny_config(synthetic_dir, output_dir)))
    return output_dir, history


@pytest.fixture(scope="session")
def trained_lora_run(synthetic_dir, tmp_path_factory):
    """LoRA (r=4) on retfound_tiny for 1 epoch: (output_dir, history)."""
    from dr_hf.config.parsing import config_from_dict
    from dr_hf.training.run import run_training

    output_dir = tmp_path_factory.mktemp("lora") / "out"
    values = tiny_config(
        synthetic_dir,
        output_dir,
        model_name="retfound_tiny",
        lora=True,
        lora_r=4,
        num_train_epochs=1,
    )
    history = run_training(*config_from_dict(values))
    return output_dir, history
