"""Command-line and YAML parsing of the three argument dataclasses.

`--config file.yaml` supplies defaults, flags on the command line override them, and a YAML key that
is no field of any dataclass is an error naming it. The flags of the original training scripts
(`--wandb`, `--resume`, `--epochs`...) are rewritten to their dataclass fields before parsing.
"""

import dataclasses
import logging
import sys
from pathlib import Path

import yaml
from transformers import HfArgumentParser

from dr_hf.config import DataArguments, DRTrainingArguments, ModelArguments

logger = logging.getLogger(__name__)

DATACLASSES = (DataArguments, ModelArguments, DRTrainingArguments)

# Original flag -> the dataclass flags it stands for (the value, if any, follows each of them).
VALUE_ALIASES = {
    "--wandb-project": ["--wandb_project"],
    "--wandb-run-name": ["--run_name"],
    "--wandb-tags": ["--wandb_tags"],
    "--wandb_run_name": ["--run_name"],
    "--resume": ["--resume_from_checkpoint"],
    "--checkpoint_path": ["--pretrained_weights"],
    "--batch_size": ["--per_device_train_batch_size", "--per_device_eval_batch_size"],
    "--epochs": ["--num_train_epochs"],
}
FLAG_ALIASES = {"--wandb": ["--report_to", "wandb"]}


class ConfigError(ValueError):
    """A configuration file or flag that cannot be used as given."""


def _rewrite_aliases(argv: list[str]) -> tuple[list[str], bool]:
    """Expand the original tool's flags; return the new argv and whether `--debug` was given."""
    out: list[str] = []
    debug = False
    i = 0
    while i < len(argv):
        arg = argv[i]
        name, eq, inline = arg.partition("=")
        if arg == "--debug":
            debug = True
        elif arg in FLAG_ALIASES:
            out.extend(FLAG_ALIASES[arg])
        elif name in VALUE_ALIASES:
            values = [inline] if eq else []
            if not eq:
                # Take every value up to the next flag (--wandb-tags takes several).
                while i + 1 < len(argv) and not argv[i + 1].startswith("--"):
                    values.append(argv[i + 1])
                    i += 1
            if not values:
                raise ConfigError(f"{name} needs a value.")
            for target in VALUE_ALIASES[name]:
                out.extend([target, *values])
        else:
            out.append(arg)
        i += 1
    return out, debug


def _field_names() -> dict[str, type]:
    return {f.name: cls for cls in DATACLASSES for f in dataclasses.fields(cls) if f.init}


def load_yaml_config(path: str | Path) -> dict:
    """Read a YAML config and check that each key is a known field."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"Config file {path} does not exist.")
    values = yaml.safe_load(path.read_text()) or {}
    if not isinstance(values, dict):
        raise ConfigError(
            f"{path} must hold a mapping of field names to values, not {type(values).__name__}."
        )
    unknown = sorted(set(values) - set(_field_names()))
    if unknown:
        raise ConfigError(
            f"{path}: unknown key(s) {', '.join(unknown)}. Use field names of DataArguments, "
            "ModelArguments or DRTrainingArguments (`dr-hf train --help` lists them)."
        )
    return values


class DRArgumentParser(HfArgumentParser):
    """HfArgumentParser over (DataArguments, ModelArguments, DRTrainingArguments) with `--config`."""

    def __init__(self, **kwargs):
        super().__init__(DATACLASSES, **kwargs)
        self.add_argument(
            "--config", default=None, help="YAML file of field values (flags override it)."
        )

    def parse(
        self, argv: list[str] | None = None
    ) -> tuple[DataArguments, ModelArguments, DRTrainingArguments, bool]:
        """Parse argv (sys.argv[1:] by default); the last item says whether `--debug` was given."""
        argv = list(sys.argv[1:] if argv is None else argv)
        argv, debug = _rewrite_aliases(argv)
        pre, _ = self.parse_known_args(argv)
        if pre.config is not None:
            self.set_defaults(**load_yaml_config(pre.config))
        *dataclass_args, rest = self.parse_args_into_dataclasses(
            argv, return_remaining_strings=True
        )
        if rest:
            raise ConfigError(f"Unknown argument(s): {' '.join(rest)}. See `dr-hf train --help`.")
        data_args, model_args, training_args = dataclass_args[:3]  # then the --config namespace
        return data_args, model_args, training_args, debug


def resolved_config(
    data_args: DataArguments, model_args: ModelArguments, training_args: DRTrainingArguments
) -> dict:
    """Every field of the three dataclasses, as plain YAML-able values."""
    training = training_args.to_dict()
    for key in list(training):
        if key.startswith("_") or key.endswith("_token"):
            training.pop(key)  # never write a Hub token to disk
    return {**dataclasses.asdict(data_args), **dataclasses.asdict(model_args), **training}


def config_from_yaml(
    path: str | Path, **overrides
) -> tuple[DataArguments, ModelArguments, DRTrainingArguments]:
    """Build the three dataclasses from a YAML file, keyword overrides winning (notebook use)."""
    return config_from_dict({**load_yaml_config(path), **overrides})


def config_from_dict(values: dict) -> tuple[DataArguments, ModelArguments, DRTrainingArguments]:
    unknown = sorted(set(values) - set(_field_names()))
    if unknown:
        raise ConfigError(f"unknown key(s) {', '.join(unknown)}.")
    return _build(values)


def _build(values: dict) -> tuple[DataArguments, ModelArguments, DRTrainingArguments]:
    owners = _field_names()
    parts = {cls: {} for cls in DATACLASSES}
    for key, value in values.items():
        parts[owners[key]][key] = value
    return tuple(cls(**parts[cls]) for cls in DATACLASSES)
