"""Command-line and YAML parsing of the three argument dataclasses, on `HfArgumentParser`.

`--config file.yaml` supplies defaults, flags on the command line override them, and a YAML key that
is no field of any dataclass is an error naming it. Dashed spellings (`--wandb-project`) are the
parser's own; single-field aliases (`--epochs`, `--resume`, `--checkpoint_path`, `--wandb-run-name`)
are `aliases` in the fields' metadata. Only `--wandb` and `--batch_size`, which set other fields'
values, are rewritten before parsing (they are flags of the parser too, for its help and for
checking a command line); `--debug` prints the resolved configuration instead of training.
"""

import dataclasses
import sys
from pathlib import Path

import yaml
from transformers import HfArgumentParser

from dr_hf.config.arguments import DataArguments, DRTrainingArguments, ModelArguments
from dr_hf.errors import ConfigError

DATACLASSES = (DataArguments, ModelArguments, DRTrainingArguments)
Configs = tuple[DataArguments, ModelArguments, DRTrainingArguments]

# Flags that stand for other flags: `--batch_size N` sets both batch sizes, `--wandb` reports to W&B.
EXPANSIONS = {
    "--batch_size": ["--per_device_train_batch_size", "--per_device_eval_batch_size"],
    "--batch-size": ["--per_device_train_batch_size", "--per_device_eval_batch_size"],
}
FLAG_EXPANSIONS = {"--wandb": ["--report_to", "wandb"]}


def _expand(argv: list[str]) -> list[str]:
    """`argv` with `--wandb` and `--batch_size` expanded into the flags they stand for."""
    out: list[str] = []
    args = iter(argv)
    for arg in args:
        name, eq, inline = arg.partition("=")
        if arg in FLAG_EXPANSIONS:
            out.extend(FLAG_EXPANSIONS[arg])
        elif name in EXPANSIONS:
            value = inline if eq else next(args, None)
            if value is None:
                raise ConfigError(f"{name} needs a value.")
            for target in EXPANSIONS[name]:
                out.extend([target, value])
        else:
            out.append(arg)
    return out


def _field_names() -> set[str]:
    return {f.name for cls in DATACLASSES for f in dataclasses.fields(cls) if f.init}


def load_yaml_config(path: str | Path) -> dict:
    """Read a YAML config and check that each key is a known field (here rather than through
    `parse_dict`, because the command line uses the values as defaults its flags override)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"Config file {path} does not exist.")
    values = yaml.safe_load(path.read_text()) or {}
    if not isinstance(values, dict):
        raise ConfigError(
            f"{path} must hold a mapping of field names to values, not {type(values).__name__}."
        )
    unknown = sorted(set(values) - _field_names())
    if unknown:
        raise ConfigError(
            f"{path}: unknown key(s) {', '.join(unknown)}. Use field names of DataArguments, "
            "ModelArguments or DRTrainingArguments (`dr-hf train --help` lists them)."
        )
    return values


class DRArgumentParser(HfArgumentParser):
    """HfArgumentParser over (DataArguments, ModelArguments, DRTrainingArguments), then any
    `extra_dataclasses` (cv's `CVArguments`), with `--config`, `--debug`, `--wandb` and
    `--batch_size`."""

    def __init__(self, extra_dataclasses: tuple = (), **kwargs):
        # "resolve": dr_hf's --debug replaces the flag of TrainingArguments.debug (which stays "")
        super().__init__((*DATACLASSES, *extra_dataclasses), conflict_handler="resolve", **kwargs)
        self.add_argument(
            "--config", default=None, help="YAML file of field values (flags override it)."
        )
        self.add_argument(
            "--debug",
            dest="print_config",
            action="store_true",
            help="Print the resolved configuration (YAML) and exit without training.",
        )
        self.set_defaults(debug="")  # TrainingArguments.debug, which lost its flag to ours
        self.add_argument(
            "--wandb", action="store_true", help="Report to Weights & Biases (--report_to wandb)."
        )
        self.add_argument(
            "--batch_size",
            "--batch-size",
            type=int,
            help="Both --per_device_train_batch_size and --per_device_eval_batch_size.",
        )

    def parse(
        self, argv: list[str] | None = None
    ) -> tuple[DataArguments, ModelArguments, DRTrainingArguments, bool]:
        """Parse argv (sys.argv[1:] by default); the last item says whether `--debug` was given."""
        data_args, model_args, training_args, *_, options = self.parse_all(argv)
        return data_args, model_args, training_args, options.print_config

    def parse_all(self, argv: list[str] | None = None) -> tuple:
        """The three run dataclasses, the extra ones, then the namespace of `--config`,
        `--debug`... An unknown flag is a ConfigError naming it."""
        argv = _expand(list(sys.argv[1:] if argv is None else argv))
        pre, _ = self.parse_known_args(argv)
        if pre.config is not None:
            self.set_defaults(**load_yaml_config(pre.config))
        *parsed, rest = self.parse_args_into_dataclasses(argv, return_remaining_strings=True)
        if rest:
            raise ConfigError(f"Unknown argument(s): {' '.join(rest)}. See `dr-hf train --help`.")
        return tuple(parsed)


def resolved_config(
    data_args: DataArguments, model_args: ModelArguments, training_args: DRTrainingArguments
) -> dict:
    """Every field of the three dataclasses, as plain YAML-able values."""
    training = training_args.to_dict()
    for key in list(training):
        if key.startswith("_") or key.endswith("_token"):
            training.pop(key)  # never write a Hub token to disk
    data = dataclasses.asdict(data_args)
    for key in ("data_dir", "validation_dir"):  # one folder is written as it is usually given
        if data[key] and len(data[key]) == 1:
            data[key] = data[key][0]
    return {**data, **dataclasses.asdict(model_args), **training}


def config_from_yaml(path: str | Path, **overrides) -> Configs:
    """Build the three dataclasses from a YAML file, keyword overrides winning (notebook use)."""
    return config_from_dict({**load_yaml_config(path), **overrides})


def config_from_dict(values: dict) -> Configs:
    """Build the three dataclasses from a dict of field values; an unknown key is an error."""
    try:
        return HfArgumentParser(DATACLASSES).parse_dict(values, allow_extra_keys=False)
    except ValueError as error:
        if "not used by the HfArgumentParser" not in str(error):
            raise
        unknown = sorted(set(values) - _field_names())
        raise ConfigError(f"unknown key(s) {', '.join(unknown)}.") from None
