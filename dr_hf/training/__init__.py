"""The training run on the HF Trainer.

`run` wires data, model, loss, optimiser and metrics into the `DRTrainer` (`trainer`, with its
callbacks) and holds the notebook API `train`. Around it: losses per head for skewed grades
(`losses`), what is fixed on the validation split before export (`calibration`: temperature,
the grade rule's cut points, operating points),
layer-wise learning-rate decay (`optim`), the Trainer's arguments (`settings`), W&B (`reporting`),
resuming (`resume`), the history rebuilt from the Trainer's logs (`history`), and what a finished
run exports: `best/` with its model card (`export`, `model_card`) and the Hub upload (`hub`).
"""

from dr_hf.training.run import TrainingRun, build_trainer, run_training, train

__all__ = ["TrainingRun", "build_trainer", "run_training", "train"]
