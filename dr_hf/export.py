"""What a finished run leaves in `output_dir/best`: the model or adapter, how to preprocess for it,
and its model card."""

import json
from pathlib import Path

from peft import PeftModel
from transformers import Trainer

from dr_hf.config import DataArguments, ModelArguments
from dr_hf.lora import write_base_record
from dr_hf.model_card import render_model_card
from dr_hf.transforms import resolve_normalization

PREPROCESSING_FILE = "dr_hf_preprocessing.json"


def preprocessing_record(model, data_args: DataArguments, image_size: int) -> dict:
    """The preprocessing a model was trained with, so evaluation and prediction repeat it."""
    mean, std, _ = resolve_normalization(model)
    return {
        "image_size": image_size,
        "crop_fov": data_args.crop_fov,
        "ben_graham": data_args.ben_graham,
        "mean": list(mean),
        "std": list(std),
    }


def write_preprocessing(folder: str | Path, record: dict) -> None:
    (Path(folder) / PREPROCESSING_FILE).write_text(json.dumps(record, indent=2))


def read_preprocessing(folder: str | Path) -> dict | None:
    """The record of a `best/` folder, or of the run a checkpoint-N folder belongs to."""
    folder = Path(folder)
    for candidate in (folder / PREPROCESSING_FILE, folder.parent / PREPROCESSING_FILE):
        if candidate.is_file():
            return json.loads(candidate.read_text())
    return None


def export_best(
    trainer: Trainer,
    folder: str | Path,
    data_args: DataArguments,
    model_args: ModelArguments,
    preprocessing: dict,
    results: dict,
) -> Path:
    """Save the trainer's model as a full model (loads with plain transformers) or a LoRA adapter
    (standard PEFT folder plus the record of its base), the preprocessing record and the model card.

    Call it on every process: `Trainer.save_model` gathers sharded weights (FSDP, ZeRO-3) and
    writes on the main process only; the rest is written there too.
    """
    folder = Path(folder)
    trainer.save_model(str(folder))
    if not trainer.is_world_process_zero():
        return folder
    (folder / "training_args.bin").unlink(missing_ok=True)  # a pickle; config.yaml holds the same
    model = trainer.model
    if isinstance(model, PeftModel):
        write_base_record(model, folder)
        base_config = model.get_base_model().config
    else:
        base_config = model.config
    write_preprocessing(folder, preprocessing)
    base_model = (base_config.dr_hf_base or {}).get(
        "pretrained_weights"
    ) or base_config.architecture
    card = render_model_card(
        data_args, model_args, trainer.args, results, str(base_model), preprocessing["image_size"]
    )
    card.save(folder / "README.md")
    return folder
