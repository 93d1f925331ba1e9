"""Which head and grading rule grade best? Softmax, ordinal (CORN) and regression heads trained
on the same synthetic set, each graded on a held-out synthetic set by argmax and by the cut
points it fitted on its validation split, over several seeds, with clean training grades and
with a share of them moved one grade at random (graders disagree by one grade often).

Every trained model gives one row per rule it allows: softmax and ordinal models by argmax and by
thresholds on the expected grade, regression models by thresholds on the score. Held-out QWK,
referable-DR AUROC and macro F1 per (label noise, head + rule): mean and standard deviation over
the seeds. Results are written to `progress` (JSON) after every trained model.
"""

import json
import logging
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.cv_ensemble import synthetic_sets
from dr_hf.config.arguments import DataArguments
from dr_hf.config.parsing import config_from_yaml
from dr_hf.data.loading import load_dr_images
from dr_hf.grading_rule import GradeRule
from dr_hf.inference import grade, load_graders
from dr_hf.metrics import compute_dr_metrics
from dr_hf.training.run import run_training

logger = logging.getLogger(__name__)

COMBINATIONS = (
    ("softmax", "argmax"),
    ("softmax", "thresholds"),
    ("ordinal", "argmax"),
    ("ordinal", "thresholds"),
    ("regression", "thresholds"),
)
METRICS = ("qwk", "referable_auroc", "macro_f1")
DEFAULT_OVERRIDES = {"image_size": 64, "per_device_train_batch_size": 16}


def noisy_labels(labels: np.ndarray, share: float, seed: int) -> np.ndarray:
    """`labels` with `share` of them (chosen at random) moved one grade up or down at random;
    grades 0 and 4 can only move inwards."""
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels, np.int64).copy()
    chosen = rng.choice(len(labels), size=round(share * len(labels)), replace=False)
    step = rng.choice([-1, 1], size=len(chosen))
    moved = labels[chosen] + step
    moved[moved < 0], moved[moved > 4] = 1, 3
    labels[chosen] = moved
    return labels


def _noisy_csv(train: Path, share: float, seed: int, folder: Path) -> Path:
    """A copy of the training set's train.csv with `share` of its grades moved (`noisy_labels`)."""
    table = pd.read_csv(train / "train.csv")
    table["diagnosis"] = noisy_labels(table["diagnosis"].to_numpy(), share, seed)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"train_noise{round(share * 100)}_seed{seed}.csv"
    table.to_csv(path, index=False)
    return path


def bench_heads(
    cache_dir: str | Path,
    config: str = "configs/quickstart.yaml",
    seeds: tuple[int, ...] = (0, 1, 2),
    noise: tuple[float, ...] = (0.0, 0.15),
    num_train: int = 480,
    num_test: int = 600,
    image_size: int = 96,
    epochs: int = 3,
    overrides: dict | None = None,
    progress: str | Path | None = None,
) -> dict:
    """Train each head with `config` (`epochs`, `overrides`) on `num_train` synthetic
    photographs (seed 0; grades moved by each `noise` share, seeded by the run's seed) and grade
    `num_test` others (seed 101) with each rule. The runs' seed is each of `seeds`.

    The default budget (the quick start's resnet10t at 64 px, batch 16, 3 epochs, on 480
    photographs of 96 px, 20 % of them for validation) is about 4 % of the quick start's
    training compute (384 x 3 image-epochs at a quarter of the pixels, against 720 x 10 at
    128 px), so that the 18 runs of 3 seeds x 2 noise levels x 3 heads take about 36 minutes on
    a busy 2-core CPU; `image_size`, `overrides` and `epochs` restore the full budget."""
    overrides = DEFAULT_OVERRIDES if overrides is None else overrides
    cache_dir = Path(cache_dir)
    train, test = synthetic_sets(cache_dir / "heads", num_train, num_test, image_size)
    held_out = load_dr_images(DataArguments(data_dir=str(test)))
    labels = np.asarray(held_out["label"], dtype=np.int64)
    settings = {
        "config": config,
        "seeds": list(seeds),
        "noise": list(noise),
        "num_train": num_train,
        "num_test": num_test,
        "image_size": image_size,
        "epochs": epochs,
        "overrides": overrides,
    }
    runs: list[dict] = []
    for share in noise:
        for seed in seeds:
            data = {"data_dir": str(train)}
            if share:
                csv = _noisy_csv(train, share, seed, cache_dir / "heads_noisy")
                data = {
                    "data_dir": None,
                    "train_csv": str(csv),
                    "image_dir": str(train / "train_images"),
                }
            for head in ("softmax", "ordinal", "regression"):
                runs += _train_and_grade(
                    head, seed, share, data, held_out, labels, cache_dir, config, epochs, overrides
                )
                if progress:
                    partial = {**settings, "runs": runs, "table": summarize(runs)}
                    Path(progress).write_text(json.dumps(partial, indent=2) + "\n")
    return {**settings, "runs": runs, "table": summarize(runs)}


def _train_and_grade(
    head, seed, share, data, held_out, labels, cache_dir, config, epochs, overrides
) -> list[dict]:
    output_dir = cache_dir / "heads_run"
    shutil.rmtree(output_dir, ignore_errors=True)
    values = {
        **data,
        "output_dir": str(output_dir),
        "num_train_epochs": epochs,
        "disable_tqdm": True,
        "save_total_limit": 1,
        "seed": seed,
        "head": head,
        **(overrides or {}),
    }
    start = time.perf_counter()
    run_training(*config_from_yaml(config, **values))
    seconds = time.perf_counter() - start
    graders = load_graders([output_dir / "best"], device="cpu")
    outputs = grade(graders, held_out, batch_size=64, num_workers=0).variants["plain"]
    saved = json.loads((output_dir / "eval_results.json").read_text())["grade_rule"]
    rows = []
    for rule_name in [rule for h, rule in COMBINATIONS if h == head]:
        rule = GradeRule(rule_name, saved["cut_points"])
        metrics = compute_dr_metrics(outputs, labels, rule=rule)
        rows.append(
            {
                "head": head,
                "rule": rule_name,
                "seed": seed,
                "noise": share,
                "cut_points": saved["cut_points"],
                "train_seconds": round(seconds, 1),
                **{name: metrics[name] for name in METRICS},
            }
        )
        logger.info("%s", rows[-1])
    return rows


def summarize(runs: list[dict]) -> list[dict]:
    """Per (noise, head, rule): each metric's mean and standard deviation over the seeds."""
    table = []
    for share in dict.fromkeys(run["noise"] for run in runs):
        for head, rule in COMBINATIONS:
            rows = [r for r in runs if (r["noise"], r["head"], r["rule"]) == (share, head, rule)]
            if not rows:
                continue
            entry = {"noise": share, "head": head, "rule": rule, "seeds": len(rows)}
            for name in METRICS:
                values = np.array([row[name] for row in rows], dtype=np.float64)
                entry[name] = float(np.mean(values))
                entry[f"{name}_sd"] = float(np.std(values, ddof=1)) if len(values) > 1 else None
            table.append(entry)
    return table
