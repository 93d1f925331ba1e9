"""Finding the checkpoint to resume from, and refusing to train over a previous run."""

import json
import logging
import re
from pathlib import Path

from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, sort_checkpoints

logger = logging.getLogger(__name__)

_CHECKPOINT = re.compile(rf"^{PREFIX_CHECKPOINT_DIR}-(\d+)$")


def is_complete(checkpoint: Path) -> bool:
    """A checkpoint is complete when its trainer_state.json, the file the Trainer writes last,
    parses and names the folder's own step: a folder cut short by a kill has none, or a torn one."""
    try:
        state = json.loads((checkpoint / "trainer_state.json").read_text())
    except (OSError, ValueError):
        return False
    match = _CHECKPOINT.match(checkpoint.name)
    return bool(match) and state.get("global_step") == int(match.group(1))


def list_checkpoints(output_dir: Path) -> list[Path]:
    """checkpoint-N folders of output_dir, oldest step first (the Trainer's own ordering)."""
    if not output_dir.is_dir():
        return []
    return [Path(path) for path in sort_checkpoints(str(output_dir))]


def resolve_resume(
    resume: str | bool | None, output_dir: str | Path, move_incomplete: bool = True
) -> str | None:
    """Turn `--resume` (a path, `last`/True, or None) into the checkpoint folder to resume from.

    `last` takes the newest complete checkpoint; incomplete ones (a run killed while saving) are
    renamed `incomplete-checkpoint-N` (by the main process only: `move_incomplete`) so that neither
    resuming nor checkpoint rotation takes them.
    Without `--resume`, an output_dir that already holds checkpoints is an error: training over
    it would mix two runs.
    """
    output_dir = Path(output_dir)
    if resume in (None, False, "", "none"):
        if list_checkpoints(output_dir):
            raise FileExistsError(
                f"{output_dir} already holds checkpoints of an earlier run. Pass `--resume last` to "
                "continue it, or choose another output_dir."
            )
        return None
    if resume is True or str(resume).lower() in ("last", "true", "latest"):
        checkpoints = list_checkpoints(output_dir)
        for checkpoint in reversed(checkpoints):
            if is_complete(checkpoint):
                return str(checkpoint)
            logger.warning(
                "%s is incomplete (the run stopped while saving it): skipped.", checkpoint
            )
            if move_incomplete:
                checkpoint.rename(checkpoint.with_name(f"incomplete-{checkpoint.name}"))
        raise FileNotFoundError(
            f"No complete checkpoint to resume from in {output_dir}. Start without --resume, or pass "
            "the path of a checkpoint folder."
        )
    path = Path(resume)
    if not path.is_dir():
        raise FileNotFoundError(f"--resume {resume}: no such checkpoint folder.")
    if not is_complete(path):
        raise ValueError(
            f"--resume {resume}: the checkpoint is incomplete (no valid trainer_state.json); the run "
            "probably stopped while writing it. Resume from an earlier checkpoint or `--resume last`."
        )
    return str(path)
