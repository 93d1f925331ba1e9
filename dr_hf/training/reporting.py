"""W&B around a training run: its settings, set in the process environment only for the duration
of the run (`with wandb_environment(...)`), and the exported model's metrics in the run's summary.
"""

import contextlib
import os
from collections.abc import Iterator

from dr_hf.config.arguments import DEFAULT_WANDB_PROJECT, DRTrainingArguments


def wandb_settings(training_args: DRTrainingArguments) -> dict[str, str]:
    """The W&B environment variables of a run reporting to W&B ({} otherwise): an explicit
    wandb_project wins over WANDB_PROJECT, which wins over dr_hf's default."""
    if "wandb" not in training_args.report_to:
        return {}
    project = training_args.wandb_project or os.environ.get("WANDB_PROJECT")
    settings = {"WANDB_PROJECT": project or DEFAULT_WANDB_PROJECT}
    if training_args.wandb_tags:
        settings["WANDB_TAGS"] = ",".join(training_args.wandb_tags)
    return settings


@contextlib.contextmanager
def wandb_environment(training_args: DRTrainingArguments) -> Iterator[None]:
    """Set the run's W&B variables (read by the Trainer's WandbCallback) inside the block only."""
    settings = wandb_settings(training_args)
    saved = {name: os.environ.get(name) for name in settings}
    os.environ.update(settings)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def finish_wandb(training_args: DRTrainingArguments, metrics: dict) -> None:
    """Record the exported model's metrics in the W&B summary and close the run, so that an
    offline run's files are complete when training returns."""
    if "wandb" not in training_args.report_to:
        return
    import wandb

    if wandb.run is not None:
        wandb.run.summary.update(
            {f"best/{k}": v for k, v in metrics.items() if isinstance(v, float)}
        )
        wandb.finish()


__all__ = ["finish_wandb", "wandb_environment", "wandb_settings"]
