"""Does the research workflow pay? A k-fold cross-validation on a synthetic training set, then
the k fold models on a held-out synthetic set, alone and as an ensemble (their probabilities
averaged): the held-out QWK of the ensemble against the mean of the single fold models'.
"""

import shutil
from pathlib import Path

import numpy as np

from dr_hf.config.arguments import DataArguments
from dr_hf.config.parsing import config_from_yaml
from dr_hf.data.loading import load_dr_images
from dr_hf.data.synthetic import make_synthetic
from dr_hf.evaluation.ensemble import headline_metrics, member_metrics
from dr_hf.inference import grade, load_graders
from dr_hf.run_folder import fold_folder
from dr_hf.training.cv import CVArguments, run_cv


def synthetic_sets(prefix: Path, num_train: int, num_test: int, image_size: int) -> tuple:
    """A synthetic training set (seed 0) and a held-out one (seed 101), made anew in
    `<prefix>_train_<n>` and `<prefix>_test_<n>`: the sets the training benchmarks grade on."""
    folders = []
    for kind, count, seed in (("train", num_train, 0), ("test", num_test, 101)):
        folder = prefix.parent / f"{prefix.name}_{kind}_{count}_{image_size}"
        folders.append(
            make_synthetic(
                folder, num_images=count, image_size=image_size, seed=seed, overwrite=True
            )
        )
    return tuple(folders)


def bench_cv_ensemble(
    cache_dir: str | Path,
    config: str = "configs/quickstart.yaml",
    folds: int = 3,
    num_train: int = 600,
    num_test: int = 300,
    image_size: int = 160,
    epochs: int = 6,
    overrides: dict | None = None,
) -> dict:
    """Train `folds` fold models with `config` on `num_train` synthetic photographs (seed 0) and
    grade `num_test` others (seed 101) with each and with their ensemble."""
    cache_dir = Path(cache_dir)
    train, test = synthetic_sets(cache_dir / "cv", num_train, num_test, image_size)
    output_dir = cache_dir / "cv_run"
    shutil.rmtree(output_dir, ignore_errors=True)
    values = {
        "data_dir": str(train),
        "output_dir": str(output_dir),
        "num_train_epochs": epochs,
        "disable_tqdm": True,
        "save_total_limit": 1,
        **(overrides or {}),
    }
    summary = run_cv(*config_from_yaml(config, **values), CVArguments(folds=folds))
    held_out = load_dr_images(DataArguments(data_dir=str(test)))
    labels = np.asarray(held_out["label"], dtype=np.int64)
    paths = [fold_folder(output_dir, k) / "best" for k in range(folds)]
    graded = grade(load_graders(paths, device="cpu"), held_out, batch_size=64, num_workers=0)
    members = member_metrics(paths, graded.members, labels)
    ensemble = headline_metrics(graded.variants["plain"], labels)
    single = {name: [member[name] for member in members] for name in ("qwk", "referable_auroc")}
    return {
        "config": config,
        "folds": folds,
        "epochs": epochs,
        "num_train": num_train,
        "num_test": num_test,
        "image_size": image_size,
        "cv_out_of_fold_qwk": summary["metrics"]["qwk"]["out_of_fold"],
        "cv_mean_fold_qwk": summary["metrics"]["qwk"]["mean"],
        "held_out_single_fold_qwk": single["qwk"],
        "held_out_mean_single_fold_qwk": float(np.mean(single["qwk"])),
        "held_out_ensemble_qwk": ensemble["qwk"],
        "held_out_single_fold_referable_auroc": single["referable_auroc"],
        "held_out_ensemble_referable_auroc": ensemble["referable_auroc"],
    }
