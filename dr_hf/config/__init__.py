"""Run configuration: the argument dataclasses (`arguments`) and how YAML files and command-line
flags fill them (`parsing`). Every field is both a YAML key and a flag of the same name."""

from dr_hf.config.arguments import (
    DataArguments,
    DRTrainingArguments,
    ModelArguments,
)
from dr_hf.config.parsing import (
    ConfigError,
    DRArgumentParser,
    config_from_dict,
    config_from_yaml,
    resolved_config,
)
from dr_hf.config.prepare_arguments import PrepareArguments

__all__ = [
    "ConfigError",
    "DRArgumentParser",
    "DRTrainingArguments",
    "DataArguments",
    "ModelArguments",
    "PrepareArguments",
    "config_from_dict",
    "config_from_yaml",
    "resolved_config",
]
