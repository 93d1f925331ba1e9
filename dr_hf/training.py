"""The training run: data, model, transforms, loss and metrics handed to the HF Trainer.

`run_training` is the whole job in one screen; `train` is the notebook API of the original tool
(same signature, same history keys).
"""

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
import yaml
from datasets import DatasetDict
from transformers import Trainer, TrainerCallback, default_data_collator, set_seed

from dr_hf.callbacks import AugmentationEpochCallback, DRTrainer, TrainAccuracy
from dr_hf.checkpoints import resolve_resume
from dr_hf.cli_args import config_from_dict, config_from_yaml, resolved_config
from dr_hf.config import DataArguments, DRTrainingArguments, ModelArguments
from dr_hf.data import load_dr_dataset
from dr_hf.export import export_best, preprocessing_record, write_preprocessing
from dr_hf.history import build_history
from dr_hf.lora import BaseRecordCallback
from dr_hf.losses import class_weights, make_loss_fn
from dr_hf.metrics import compute_dr_metrics, make_compute_metrics, softmax
from dr_hf.models import create_model, parameter_summary
from dr_hf.optim import layer_decay_param_groups
from dr_hf.run_settings import configure_run, finish_wandb, steps_left_to_apply
from dr_hf.transforms import FundusTransform, resolve_normalization, with_transforms

logger = logging.getLogger(__name__)


@dataclass
class TrainingRun:
    """Everything `build_trainer` assembled, for `run_training` and for notebooks and tests."""

    trainer: DRTrainer
    dataset: DatasetDict
    train_transform: FundusTransform
    image_size: int
    parameters: dict
    class_weights: torch.Tensor | None
    config: dict
    push_to_hub: bool = False
    hub_token: str | None = field(default=None, repr=False)


def build_trainer(
    data_args: DataArguments,
    model_args: ModelArguments,
    training_args: DRTrainingArguments,
    callbacks: list[TrainerCallback] | None = None,
) -> TrainingRun:
    """Data, model, transforms, loss and metrics, wired into a `DRTrainer` (nothing trained yet).

    The Trainer never sees `push_to_hub` (it would upload every checkpoint; dr_hf uploads `best/`)
    nor `hub_token` (it pickles its arguments into each checkpoint): both move to the TrainingRun.
    """
    configure_run(data_args, model_args, training_args)
    config = resolved_config(data_args, model_args, training_args)
    push_to_hub, hub_token = training_args.push_to_hub, training_args.hub_token
    training_args.push_to_hub, training_args.hub_token = False, None
    set_seed(training_args.seed)

    # ---- Data -------------------------------------------------------------------------------
    crop, ben_graham = steps_left_to_apply(data_args)  # refuses contradictions before any I/O
    dataset = load_dr_dataset(data_args)
    logger.info("Data: %d training and %d validation images.", *map(len, dataset.values()))
    train_labels = list(dataset["train"]["label"])

    # ---- Model ------------------------------------------------------------------------------
    model = create_model(model_args, image_size=data_args.image_size)
    parameters = parameter_summary(model)
    mean, std, input_size = resolve_normalization(model)
    image_size = data_args.image_size or input_size

    # ---- On-the-fly preprocessing and augmentation -----------------------------------------
    dataset, train_transform = with_transforms(
        dataset,
        image_size=image_size,
        mean=mean,
        std=std,
        crop=crop,
        ben_graham=ben_graham,
        augment=data_args.augment,
        seed=training_args.seed,
    )

    # ---- Loss and metrics -------------------------------------------------------------------
    weights = class_weights(train_labels, model_args.num_labels, training_args.class_weighting)
    loss_fn = make_loss_fn(
        training_args.loss,
        weight=weights,
        label_smoothing=training_args.label_smoothing_factor,
        focal_gamma=training_args.focal_gamma,
    )
    train_accuracy = TrainAccuracy(loss_fn)
    optimizer_cls_and_kwargs = None
    if training_args.layer_decay is not None:
        groups = layer_decay_param_groups(
            model,
            training_args.learning_rate,
            training_args.weight_decay,
            training_args.layer_decay,
        )
        optimizer_cls, optimizer_kwargs = Trainer.get_optimizer_cls_and_kwargs(training_args, model)
        optimizer_cls_and_kwargs = (optimizer_cls, {**optimizer_kwargs, "params": groups})

    # ---- Trainer ----------------------------------------------------------------------------
    trainer = DRTrainer(
        model=model,
        args=training_args,
        train_dataset=dataset["train"],
        eval_dataset=dataset["validation"],
        data_collator=default_data_collator,
        compute_metrics=make_compute_metrics(),
        compute_loss_func=train_accuracy,
        optimizer_cls_and_kwargs=optimizer_cls_and_kwargs,
        callbacks=[
            AugmentationEpochCallback(train_transform),
            BaseRecordCallback(),
            *(callbacks or []),
        ],
        train_accuracy=train_accuracy,
    )
    return TrainingRun(
        trainer, dataset, train_transform, image_size, parameters, weights, config,
        push_to_hub, hub_token,
    )  # fmt: skip


def run_training(
    data_args: DataArguments,
    model_args: ModelArguments,
    training_args: DRTrainingArguments,
    callbacks: list[TrainerCallback] | None = None,
) -> dict:
    """Train, keep the best model in `output_dir/best`, return the per-epoch history."""
    output_dir = Path(training_args.output_dir)
    resume = resolve_resume(
        training_args.resume_from_checkpoint, output_dir, move_incomplete=training_args.should_save
    )
    run = build_trainer(data_args, model_args, training_args, callbacks)
    trainer = run.trainer
    preprocessing = preprocessing_record(trainer.model, data_args, run.image_size)
    if trainer.is_world_process_zero():
        # Written first, so that evaluate/predict on a checkpoint of a running run preprocess right.
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / "config.yaml").write_text(yaml.safe_dump(run.config, sort_keys=False))
        write_preprocessing(output_dir, preprocessing)

    trainer.train(resume_from_checkpoint=resume)

    # ---- Best model, final metrics, history -------------------------------------------------
    prediction = trainer.predict(run.dataset["validation"], metric_key_prefix="eval")
    final_metrics = compute_dr_metrics(softmax(prediction.predictions), prediction.label_ids)
    history = build_history(trainer.state.log_history)
    results = {
        "best_checkpoint": trainer.state.best_model_checkpoint,
        "image_size": run.image_size,
        "parameters": run.parameters,
        "class_weights": None if run.class_weights is None else run.class_weights.tolist(),
        **final_metrics,
    }
    best = export_best(trainer, output_dir / "best", data_args, model_args, preprocessing, results)
    if trainer.is_world_process_zero():
        (output_dir / "eval_results.json").write_text(json.dumps(results, indent=2))
        (output_dir / "training_history.json").write_text(json.dumps(history, indent=2))
        if run.push_to_hub:
            from dr_hf.hub import push_best

            push_best(best, training_args, token=run.hub_token)
    finish_wandb(training_args, final_metrics)
    return history


def train(
    config,
    resume_checkpoint: str | None = None,
    enable_wandb: bool = False,
    wandb_project: str | None = None,
    wandb_run_name: str | None = None,
    wandb_tags: list[str] | None = None,
) -> dict:
    """Train from a config (YAML path, dict of fields, or a (data, model, training) tuple).

    Returns the per-epoch history with the original tool's keys (`train_loss`, `train_acc`,
    `val_loss`, `val_acc`, `learning_rate`, `epoch_time`) plus every validation metric as `val_<name>`.
    The W&B arguments override the config's `wandb_project`, `run_name` and `wandb_tags` when given.
    """
    overrides = {} if wandb_project is None else {"wandb_project": wandb_project}
    if resume_checkpoint is not None:
        overrides["resume_from_checkpoint"] = resume_checkpoint
    if enable_wandb:
        overrides["report_to"] = ["wandb"]
    if wandb_run_name is not None:
        overrides["run_name"] = wandb_run_name
    if wandb_tags is not None:
        overrides["wandb_tags"] = list(wandb_tags)
    if isinstance(config, (str, os.PathLike)):
        data_args, model_args, training_args = config_from_yaml(config, **overrides)
    elif isinstance(config, dict):
        data_args, model_args, training_args = config_from_dict({**config, **overrides})
    else:
        data_args, model_args, training_args = config
        for key, value in overrides.items():
            setattr(training_args, key, value)
    return run_training(data_args, model_args, training_args)


__all__ = ["TrainingRun", "build_trainer", "run_training", "train"]
