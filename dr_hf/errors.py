"""The errors dr_hf raises for input it cannot use, and how their messages list what is wrong.

Each message names the file, row or key at fault and says what to do.
"""

MAX_LISTED = 20


class DataError(ValueError):
    """Training data that cannot be used as it is; the message says where and how to fix it."""


class CheckpointError(ValueError):
    """A weights file that cannot be used as asked; the message says why and what to do."""


class ConfigError(ValueError):
    """A configuration file or flag that cannot be used as given."""


def listing(items: list[str], cap: int = MAX_LISTED, inline: bool = False) -> str:
    """The first `cap` items, then how many more there are: one per line, or comma-separated
    with `inline`."""
    more = f"and {len(items) - cap} more" if len(items) > cap else ""
    if inline:
        return ", ".join(items[:cap]) + (f" {more}" if more else "")
    lines = [f"  {item}" for item in items[:cap]]
    return "\n".join(lines + ([f"  ... {more}"] if more else []))
