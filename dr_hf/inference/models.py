"""Which models to grade with, named on the command line without guessing.

`--model DIR` may be repeated, `--models-file FILE` lists more (one per line; the flags are
`dr_hf.config.command_arguments.ModelsArguments`), and a `dr-hf cv` output folder stands for its
folds' `best/` models. Every name must be a saved model or adapter folder (`MODEL_FILES`) or a
cv output folder: anything else is an error that names it. Images are never taken for models,
nor models for images.
"""

from pathlib import Path

from dr_hf.run_folder import CV_SUMMARY, cv_fold_models

MODEL_FILES = ("config.json", "adapter_config.json")


def is_model_folder(path: str | Path) -> bool:
    """A folder that holds a saved model or adapter (`MODEL_FILES`), or a `dr-hf cv` output."""
    return any((Path(path) / name).is_file() for name in (*MODEL_FILES, CV_SUMMARY))


def read_models_file(path: str | Path) -> list[Path]:
    """The model folders a `--models-file` lists, relative ones from the file's own folder."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--models-file {path}: no such file.")
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return [path.parent / line for line in lines if line]


def named_models(models, models_file: str | Path | None = None) -> list[Path]:
    """The model folders `models` (one name or a list) and `models_file` name, in that order, a
    cv output folder standing for its `fold-K/best` models.

    Raises FileNotFoundError naming each name that is neither a model folder nor a cv folder,
    and ValueError when no model is named at all.
    """
    names = [models] if isinstance(models, str | Path) else list(models or [])
    paths = [Path(name) for name in names]
    if models_file is not None:
        paths += read_models_file(models_file)
    if not paths:
        raise ValueError("No model given: name one with --model DIR (or --models-file FILE).")
    unknown = [str(path) for path in paths if not is_model_folder(path)]
    if unknown:
        raise FileNotFoundError(
            f"Not a model folder (no {' or '.join(MODEL_FILES)}) nor a dr-hf cv output folder "
            f"(no {CV_SUMMARY}): {', '.join(unknown)}. Give best/, a checkpoint-N or an adapter "
            "folder of a training run."
        )
    return [fold for path in paths for fold in cv_fold_models(path) or [path]]


__all__ = [
    "MODEL_FILES",
    "is_model_folder",
    "named_models",
    "read_models_file",
]
