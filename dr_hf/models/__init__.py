"""Building and loading graders.

A grader is a transformers `TimmWrapperForImageClassification` around a timm model (`graders`),
or for ordinal (CORN) and regression heads its subclass `OrderedTimmForImageClassification`
(`ordered_heads`, self-contained: saved folders carry its file), optionally wrapped in PEFT LoRA
adapters (`lora`). Weight files of any timm or torch layout are
read safely and checked against the model (`weights`); RETFound's official checkpoints get their
own key mapping (`retfound`). An adapter records the base it was trained on (`base_record`).
"""

from dr_hf.models.graders import build_model, create_model, load_trained_model, parameter_summary

__all__ = ["build_model", "create_model", "load_trained_model", "parameter_summary"]
