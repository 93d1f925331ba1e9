"""`CommandParser`: the `HfArgumentParser` of one `dr-hf` command, with the three kinds of flag a
dataclass field alone cannot say (see `dr_hf.config.command_arguments`): positional arguments,
flags repeated once per value, and switches without a value."""

import argparse
import dataclasses
import typing

from transformers import HfArgumentParser


class CommandParser(HfArgumentParser):
    """`HfArgumentParser` over a command's dataclasses: each field is `--name` and `--dashed-name`
    (HfArgumentParser's own aliasing), except where its metadata says `positional`, `repeat` or
    `switch`. `parse` returns the dataclasses; with `intermixed`, positional arguments may sit
    between the flags (`dr-hf predict a.png --model M b.png`)."""

    def __init__(self, dataclass_types, intermixed: bool = False, **kwargs):
        self.intermixed = intermixed
        super().__init__(dataclass_types, **kwargs)

    def _parse_dataclass_field(self, parser, field: dataclasses.Field) -> None:
        kind = next((k for k in ("positional", "repeat", "switch") if field.metadata.get(k)), None)
        if kind is None:
            return super()._parse_dataclass_field(parser, field)
        kwargs = {k: v for k, v in field.metadata.items() if k not in (kind, "aliases")}
        element = typing.get_args(field.type)[0] if typing.get_origin(field.type) is list else None
        if field.default_factory is not dataclasses.MISSING:
            kwargs.setdefault("default", field.default_factory())
        elif field.default is not dataclasses.MISSING:
            kwargs.setdefault("default", field.default)
        names = list(dict.fromkeys([f"--{field.name}", f"--{field.name.replace('_', '-')}"]))
        if kind == "positional":
            kwargs.setdefault("type", element or field.type)
            parser.add_argument(field.name, **kwargs)
        elif kind == "repeat":
            parser.add_argument(*names, action="append", type=element, **kwargs)
        else:
            parser.add_argument(*names, action="store_true", **kwargs)

    def parse(self, argv: list[str] | None = None) -> tuple:
        """One instance of each dataclass, in order; a dataclass's ValueError (a value out of
        range) propagates."""
        namespace = (self.parse_intermixed_args if self.intermixed else self.parse_args)(argv)
        return self.dataclasses_from(namespace)

    def dataclasses_from(self, namespace: argparse.Namespace) -> tuple:
        values = vars(namespace)
        return tuple(
            dtype(**{f.name: values[f.name] for f in dataclasses.fields(dtype) if f.init})
            for dtype in self.dataclass_types
        )


__all__ = ["CommandParser"]
