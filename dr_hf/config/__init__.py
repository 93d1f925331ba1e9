"""Run configuration: the argument dataclasses (`arguments`, `training_arguments`), how YAML files
and command-line flags fill them (`parsing`), and the flags of the other commands
(`command_arguments`, `prepare_arguments`). Every field is both a YAML key and a flag of the same
name. Names load on first use, so that importing a light one imports no torch."""

import importlib

_HOMES = {
    "ConfigError": "dr_hf.config.parsing",
    "DRArgumentParser": "dr_hf.config.parsing",
    "DRTrainingArguments": "dr_hf.config.training_arguments",
    "DataArguments": "dr_hf.config.arguments",
    "ModelArguments": "dr_hf.config.arguments",
    "PrepareArguments": "dr_hf.config.prepare_arguments",
    "config_from_dict": "dr_hf.config.parsing",
    "config_from_yaml": "dr_hf.config.parsing",
    "resolved_config": "dr_hf.config.parsing",
}

__all__ = sorted(_HOMES)


def __getattr__(name: str):
    if name in _HOMES:
        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
