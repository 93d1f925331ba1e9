"""What a finished run leaves in `output_dir/best`: the model or adapter, how to preprocess for it,
and its model card."""

from pathlib import Path

from peft import PeftModel
from transformers import Trainer

from dr_hf.config.arguments import DataArguments, ModelArguments
from dr_hf.models.base_record import write_base_record
from dr_hf.models.parts import base_model, data_config
from dr_hf.run_folder import write_preprocessing
from dr_hf.training.model_card import render_model_card


def preprocessing_record(model, data_args: DataArguments, image_size: int) -> dict:
    """The preprocessing a model was trained with, so evaluation and prediction repeat it."""
    mean, std, _ = data_config(model)
    return {
        "image_size": image_size,
        "crop_fov": data_args.crop_fov,
        "ben_graham": data_args.ben_graham,
        "mean": list(mean),
        "std": list(std),
    }


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
    if isinstance(trainer.model, PeftModel):
        write_base_record(trainer.model, folder)
    base_config = base_model(trainer.model).config
    write_preprocessing(folder, preprocessing)
    base_name = (base_config.dr_hf_base or {}).get("pretrained_weights") or base_config.architecture
    card = render_model_card(
        data_args, model_args, trainer.args, results, str(base_name), preprocessing["image_size"]
    )
    card.save(folder / "README.md")
    return folder
