"""The Trainer's copy of a run's arguments, with what graders need, and the contradictions refused
before any I/O. Nothing here changes the caller's arguments: derived settings come back as new
objects. The data's prepared state is checked in `dr_hf.data.prepared`, W&B is set up in
`dr_hf.training.reporting`."""

import copy

from dr_hf.config.arguments import DataArguments, DRTrainingArguments


def trainer_arguments(data_args: DataArguments, training_args: DRTrainingArguments):
    """A copy of `training_args` for the Trainer, with the settings the graders need.

    PeftModel hides the forward signature (`label_names`); graders use every parameter, so DDP's
    search for unused ones is a wasted graph walk; non-reentrant gradient checkpointing works with
    frozen bases. The Trainer never sees `push_to_hub` (it would upload every checkpoint; dr_hf
    uploads `best/`) nor `hub_token` (it pickles its arguments into each checkpoint).
    """
    if training_args.push_to_hub and not training_args.hub_model_id:
        raise ValueError("push_to_hub needs --hub_model_id user/name (checked before training).")
    args = copy.copy(training_args)
    args.label_names = args.label_names or ["labels"]
    if args.ddp_find_unused_parameters is None:
        args.ddp_find_unused_parameters = False
    if args.gradient_checkpointing and not args.gradient_checkpointing_kwargs:
        args.gradient_checkpointing_kwargs = {"use_reentrant": False}
    args.push_to_hub, args.hub_token = False, None
    return args
