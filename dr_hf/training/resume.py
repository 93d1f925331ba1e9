"""Finding the checkpoint to resume from, and refusing to train over a previous run."""

import logging
from pathlib import Path

from transformers.trainer_utils import sort_checkpoints

from dr_hf.run_folder import folder_damage

logger = logging.getLogger(__name__)


def is_complete(checkpoint: Path) -> bool:
    """A checkpoint is complete when every file a resume reads is whole (`folder_damage`)."""
    return folder_damage(checkpoint, checkpoint=True) is None


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
            if (damage := folder_damage(checkpoint, checkpoint=True)) is None:
                return str(checkpoint)
            logger.warning("%s is incomplete or damaged (%s): skipped.", checkpoint, damage)
            if move_incomplete:
                checkpoint.rename(checkpoint.with_name(f"incomplete-{checkpoint.name}"))
                logger.warning("%s renamed incomplete-%s.", checkpoint, checkpoint.name)
        raise FileNotFoundError(
            f"No complete checkpoint to resume from in {output_dir}. Start without --resume, or pass "
            "the path of a checkpoint folder."
        )
    path = Path(resume)
    if not path.is_dir():
        raise FileNotFoundError(f"--resume {resume}: no such checkpoint folder.")
    if (damage := folder_damage(path, checkpoint=True)) is not None:
        raise ValueError(
            f"--resume {resume}: the checkpoint is incomplete or damaged: {damage}. The run probably "
            "stopped while writing it. Resume from an earlier checkpoint or `--resume last`."
        )
    return str(path)
