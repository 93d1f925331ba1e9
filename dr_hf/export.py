"""What a finished run leaves in `output_dir/best`: the model or adapter, how to preprocess for it,
and its model card."""

import json
from pathlib import Path

from peft import PeftModel

from dr_hf.config import DataArguments, DRTrainingArguments, ModelArguments
from dr_hf.lora import save_adapter
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


def read_preprocessing(folder: str | Path) -> dict | None:
    """The record of a `best/` folder, or of the run a checkpoint-N folder belongs to."""
    folder = Path(folder)
    for candidate in (folder / PREPROCESSING_FILE, folder.parent / PREPROCESSING_FILE):
        if candidate.is_file():
            return json.loads(candidate.read_text())
    return None


def export_best(
    model,
    folder: str | Path,
    data_args: DataArguments,
    model_args: ModelArguments,
    training_args: DRTrainingArguments,
    results: dict,
) -> Path:
    """Save a full model (loads with plain transformers) or a LoRA adapter (standard PEFT folder
    plus the record of its base), the preprocessing record, and the model card."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if isinstance(model, PeftModel):
        save_adapter(model, folder)
        base_config = model.get_base_model().config
    else:
        model.save_pretrained(folder)
        base_config = model.config
    record = preprocessing_record(model, data_args, results["image_size"])
    (folder / PREPROCESSING_FILE).write_text(json.dumps(record, indent=2))
    (folder.parent / PREPROCESSING_FILE).write_text(json.dumps(record, indent=2))
    base_model = (base_config.dr_hf_base or {}).get(
        "pretrained_weights"
    ) or base_config.architecture
    card = render_model_card(
        data_args, model_args, training_args, results, str(base_model), results["image_size"]
    )
    card.save(folder / "README.md")
    return folder
