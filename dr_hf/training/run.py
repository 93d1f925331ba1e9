"""The training run: data, model, transforms, loss and metrics handed to the HF Trainer.

`run_training` is the whole job in one screen; `train` is the notebook API (a YAML path, a dict
of fields or the three argument dataclasses; it returns the per-epoch history).
"""

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from datasets import DatasetDict
from transformers import TrainerCallback, default_data_collator, set_seed

from dr_hf.config.arguments import DataArguments, DRTrainingArguments, ModelArguments
from dr_hf.config.parsing import config_from_dict, config_from_yaml, resolved_config
from dr_hf.data.fundus_processor import FundusImageProcessor
from dr_hf.data.loading import load_dr_dataset, source_counts
from dr_hf.data.prepared import steps_left_to_apply
from dr_hf.data.transforms import FundusTransform, with_transforms
from dr_hf.grading_rule import DEFAULT_CUT_POINTS, GRADE_RULE_KEY, GradeRule, head_of
from dr_hf.metrics import compute_dr_metrics, make_compute_metrics, model_outputs
from dr_hf.models.graders import create_model, parameter_summary
from dr_hf.models.grading_pipeline import name_pipeline_in
from dr_hf.models.parts import base_model
from dr_hf.run_folder import (
    BEST,
    SOURCE_COUNTS,
    write_history,
    write_run_config,
    write_validation_predictions,
)
from dr_hf.training.calibration import calibrate, save_grade_rule, save_operating_points
from dr_hf.training.export import export_best
from dr_hf.training.history import build_history
from dr_hf.training.losses import check_loss_settings, training_loss
from dr_hf.training.optim import layer_decay_optimizer
from dr_hf.training.reporting import finish_wandb, wandb_environment
from dr_hf.training.resume import resolve_resume
from dr_hf.training.settings import trainer_arguments
from dr_hf.training.trainer import AugmentationEpochCallback, BaseRecordCallback, DRTrainer

logger = logging.getLogger(__name__)


@dataclass
class TrainingRun:
    """Everything `build_trainer` assembled, for `run_training` and for notebooks and tests."""

    trainer: DRTrainer
    dataset: DatasetDict
    train_transform: FundusTransform
    image_size: int
    processor: FundusImageProcessor
    parameters: dict
    class_weights: torch.Tensor | None
    config: dict
    sources: dict | None = None  # images per grade per source, when several sources are joined


def build_trainer(
    data_args: DataArguments,
    model_args: ModelArguments,
    training_args: DRTrainingArguments,
    callbacks: list[TrainerCallback] | None = None,
    dataset: DatasetDict | None = None,
) -> TrainingRun:
    """Data, model, transforms, loss and metrics, wired into a `DRTrainer` (nothing trained yet).

    `dataset` (train and validation splits) replaces loading the source `data_args` names. The
    arguments given are not changed: the Trainer gets a copy (`trainer_arguments`).
    """
    args = trainer_arguments(data_args, training_args)
    check_loss_settings(model_args.head, args.loss, args.label_smoothing_factor)
    set_seed(args.seed)

    # ---- Data -------------------------------------------------------------------------------
    crop, ben_graham = steps_left_to_apply(data_args)  # refuses contradictions before any I/O
    dataset = dataset if dataset is not None else load_dr_dataset(data_args)
    logger.info("Data: %d training and %d validation images.", *map(len, dataset.values()))
    train_labels = list(dataset["train"]["label"])
    loss_fn, weights = training_loss(
        args, train_labels, model_args.num_labels, head=model_args.head
    )
    sources = source_counts(dataset) if "source" in dataset["train"].column_names else None

    # ---- Model ------------------------------------------------------------------------------
    model, processor = create_model(
        model_args,
        data_args.image_size,
        crop_fov=data_args.crop_fov,
        ben_graham=data_args.ben_graham,
        mean_grade=float(np.mean(train_labels)),
    )
    processor.name_in(base_model(model).config)  # so that pipeline() finds it in config.json
    name_pipeline_in(base_model(model).config)  # pipeline(model=best/) returns the decided grade
    image_size, mean, std = processor.input_side, processor.image_mean, processor.image_std

    # ---- On-the-fly preprocessing and augmentation -----------------------------------------
    dataset, train_transform = with_transforms(
        dataset,
        image_size=image_size,
        mean=mean,
        std=std,
        crop=crop,
        ben_graham=ben_graham,
        augment=data_args.augment,
        seed=args.seed,
        augment_on=data_args.augment_on,
    )

    # ---- Trainer ----------------------------------------------------------------------------
    trainer = DRTrainer(
        model=model,
        args=args,
        train_dataset=dataset["train"],
        eval_dataset=dataset["validation"],
        data_collator=default_data_collator,
        processing_class=processor,  # saved in every checkpoint and in best/
        compute_metrics=make_compute_metrics(training_rule(model_args.head)),
        compute_loss_func=loss_fn,
        optimizer_cls_and_kwargs=layer_decay_optimizer(model, args),
        callbacks=[
            AugmentationEpochCallback(train_transform),
            BaseRecordCallback(),
            *(callbacks or []),
        ],
        device_augmentation=train_transform.device_half(),
    )
    return TrainingRun(
        trainer,
        dataset,
        train_transform,
        image_size,
        processor,
        parameter_summary(model),
        weights,
        resolved_config(data_args, model_args, training_args),
        sources,
    )


def run_training(
    data_args: DataArguments,
    model_args: ModelArguments,
    training_args: DRTrainingArguments,
    callbacks: list[TrainerCallback] | None = None,
    dataset: DatasetDict | None = None,
) -> dict:
    """Train, keep the best model in `output_dir/best`, return the per-epoch history.

    `dataset` (train and validation splits) replaces loading the source `data_args` names, as
    for `build_trainer`; cross-validation passes each fold's split this way.
    """
    output_dir = Path(training_args.output_dir)
    resume = resolve_resume(
        training_args.resume_from_checkpoint, output_dir, move_incomplete=training_args.should_save
    )
    run = build_trainer(data_args, model_args, training_args, callbacks, dataset)
    trainer = run.trainer
    if trainer.is_world_process_zero():
        # Written first, so that evaluate/predict on a checkpoint of a running run preprocess right.
        output_dir.mkdir(parents=True, exist_ok=True)
        write_run_config(output_dir, run.config)
        run.processor.save_pretrained(output_dir)
        if run.sources is not None:
            (output_dir / SOURCE_COUNTS).write_text(json.dumps(run.sources, indent=2) + "\n")

    with wandb_environment(training_args):
        trainer.train(resume_from_checkpoint=resume)

        # ---- Best model, final metrics, history ---------------------------------------------
        results, outputs, labels = final_results(
            run, training_args.calibrate, model_args.grade_rule
        )
        model_id = training_args.hub_model_id if training_args.push_to_hub else None
        best = export_best(trainer, output_dir / BEST, data_args, model_args, results, model_id)
        history = build_history(trainer.state.log_history)
        # The Trainer's own metrics file (main process only): eval_results.json.
        trainer.log_metrics("eval", {k: v for k, v in results.items() if isinstance(v, float)})
        trainer.save_metrics("eval", results, combined=False)
        if trainer.is_world_process_zero():
            write_history(output_dir, history)
            ids = run.dataset["validation"].with_format(None)["image_id"]
            rule = GradeRule.from_record(results["grade_rule"])
            write_validation_predictions(output_dir, ids, labels, outputs, rule=rule)
            if training_args.push_to_hub:
                from dr_hf.training.hub import push_best

                push_best(best, training_args, token=training_args.hub_token)
        finish_wandb(training_args, results)
    return history


def training_rule(head: str) -> GradeRule:
    """How grades are decided while training (the metric that picks the best checkpoint):
    argmax for probability heads, whatever the saved rule, and for a regression model its score
    cut at the default cut points (it has no argmax); the fitted cut points come at the end.

    Not the default cut points on a probability model's expected grade: before calibration an
    under-confident model's expected grade sits near the middle of the scale, and on the quick
    start that metric picked the epoch-4 checkpoint (referable AUROC 0.973) over the epoch-10
    one argmax picks (0.994). The heads benchmark measured the thresholds rule on checkpoints
    picked by argmax, as here."""
    if head == "regression":
        return GradeRule("thresholds", DEFAULT_CUT_POINTS)
    return GradeRule()


def final_results(
    run: TrainingRun, calibrate_probabilities: bool = True, grade_rule: str = "argmax"
):
    """The best model's validation results (metrics, calibration, grade rule, operating points
    and the run's facts), with its validation outputs (probabilities [N, 5], or regression
    scores [N, 1]) and labels. The temperature, when fitted, is folded into the model first;
    the cut points are fitted next, on the calibrated outputs, and the metrics follow the
    saved rule (`grade_rule` with those cut points)."""
    trainer = run.trainer
    head = head_of(base_model(trainer.model).config)
    prediction = trainer.predict(run.dataset["validation"], metric_key_prefix="eval")
    logits, labels, calibration = prediction.predictions, prediction.label_ids, None
    if calibrate_probabilities or head == "regression":
        logits, calibration = calibrate(trainer.model, logits, labels, head)
    outputs = model_outputs(logits)
    rule = save_grade_rule(trainer.model, outputs, labels, grade_rule)
    metrics = compute_dr_metrics(outputs, labels, rule=rule)
    points = save_operating_points(trainer.model, metrics["referable_operating_points"])
    results = {
        "head": head,
        "grade_rule": getattr(base_model(trainer.model).config, GRADE_RULE_KEY),
        "calibration": calibration,
        "operating_points": points,
        "best_checkpoint": trainer.state.best_model_checkpoint,
        "image_size": run.image_size,
        "parameters": run.parameters,
        "class_weights": None if run.class_weights is None else run.class_weights.tolist(),
        **metrics,
    }
    return results, outputs, labels


def train(
    config,
    resume_checkpoint: str | None = None,
    enable_wandb: bool = False,
    wandb_project: str | None = None,
    wandb_run_name: str | None = None,
    wandb_tags: list[str] | None = None,
) -> dict:
    """Train from a config (YAML path, dict of fields, or a (data, model, training) tuple).

    Returns the per-epoch history (`train_loss`, `train_acc`, `val_loss`, `val_acc`,
    `learning_rate`, `epoch_time`) plus every validation metric as `val_<name>`. The W&B
    arguments override the config's `wandb_project`, `run_name` and `wandb_tags` when given.
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
