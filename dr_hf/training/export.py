"""What a finished run leaves in `output_dir/best`: the model or adapter, the processor that
preprocesses for it and the pipeline that decides its grade (with their code, for
`trust_remote_code`), and its model card."""

from pathlib import Path

from peft import PeftModel
from transformers import Trainer

from dr_hf.config.arguments import DataArguments, ModelArguments
from dr_hf.models.base_record import write_base_record
from dr_hf.models.parts import base_model
from dr_hf.run_folder import partial_folder, replace_with_partial
from dr_hf.training.model_card import render_model_card


def export_best(
    trainer: Trainer,
    folder: str | Path,
    data_args: DataArguments,
    model_args: ModelArguments,
    results: dict,
    model_id: str | None = None,
) -> Path:
    """Save the trainer's model as a full model (loads with plain transformers) or a LoRA adapter
    (standard PEFT folder plus the record of its base), its `processing_class` (the
    `FundusImageProcessor`) and the model card, whose usage snippet loads `model_id` (default:
    the folder's path).

    Call it on every process: `Trainer.save_model` gathers sharded weights (FSDP, ZeRO-3) and
    writes on the main process only; the rest is written there too. Everything is written into a
    `<folder>.partial` sibling first, which replaces `folder` once whole: a run killed while
    exporting never leaves a half-written `best/` (and a resume writes it again).
    """
    folder = Path(folder)
    partial = partial_folder(folder, empty=trainer.is_world_process_zero())
    trainer.save_model(str(partial))  # model or adapter, processor and pipeline, with their code
    if not trainer.is_world_process_zero():
        return folder
    (partial / "training_args.bin").unlink(missing_ok=True)  # a pickle; config.yaml holds the same
    if isinstance(trainer.model, PeftModel):
        write_base_record(trainer.model, partial)
    base_config = base_model(trainer.model).config
    base_name = (base_config.dr_hf_base or {}).get("pretrained_weights") or base_config.architecture
    card = render_model_card(
        data_args,
        model_args,
        trainer.args,
        results,
        str(base_name),
        trainer.processing_class.input_side,
        model_id=model_id or str(folder),
    )
    card.save(partial / "README.md")
    return replace_with_partial(folder)
