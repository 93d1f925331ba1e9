"""The `--help` pages of `dr-hf train` and `dr-hf cv`, kept on disk after their first printing.

Their flags include transformers' `TrainingArguments`, whose module imports torch (about 4.5 s on
a 2-core CPU), so building the page takes seconds while printing a saved one takes milliseconds.
A page is saved under the user's cache folder (`$XDG_CACHE_HOME/dr_hf/help`, else
`~/.cache/dr_hf/help`) with a key over everything the text depends on: the command, the versions
of dr_hf, transformers and Python, the source of the modules that define the flags, and the
terminal width argparse wraps to. Any change to one of them builds the page afresh. A folder that
cannot be written only costs the speed.
"""

import hashlib
import importlib.metadata
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

logger = logging.getLogger(__name__)

FLAG_MODULES = (
    "config/arguments.py",
    "config/training_arguments.py",
    "config/parsing.py",
    "config/speed.py",
    "training/cv.py",
)
"""The files of the package whose source defines train's and cv's flags (read, not imported:
importing `dr_hf.training` would load torch)."""
PACKAGE = Path(__file__).resolve().parent.parent


def cache_folder() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "dr_hf" / "help"


def help_key(command: str) -> str:
    """A digest of everything the help text of `command` depends on."""
    digest = hashlib.sha256()
    parts = [command, sys.version, str(shutil.get_terminal_size().columns)]
    for package in ("dr-hf", "transformers"):
        try:
            parts.append(f"{package}={importlib.metadata.version(package)}")
        except importlib.metadata.PackageNotFoundError:
            parts.append(f"{package}=absent")
    for part in parts:
        digest.update(part.encode() + b"\0")
    for module in FLAG_MODULES:
        digest.update(module.encode() + b"\0" + (PACKAGE / module).read_bytes())
    return digest.hexdigest()[:20]


def cached_help(command: str, build: Callable[[], str]) -> str:
    """The help text of `command`: the saved one when its key matches, else `build()`, saved."""
    path = cache_folder() / f"{command}-{help_key(command)}.txt"
    try:
        return path.read_text()
    except OSError:
        pass
    text = build()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False) as file:
            file.write(text)
        os.replace(file.name, path)
    except OSError as error:
        logger.debug("The help page of %s is not cached: %s", command, error)
    return text


__all__ = ["FLAG_MODULES", "cache_folder", "cached_help", "help_key"]
