"""The quick start's spread over seeds: the figures a newcomer's run should fall inside.

    python scripts/quickstart_seeds.py [--seeds 0 1 2] [--table-only]

Makes the built-in synthetic set once (the quick start's command), then trains the quick start
once per seed:

    dr-hf make-synthetic --output data/synthetic --num-images 900 --image-size 160 --overwrite
    dr-hf train --config configs/quickstart.yaml --seed K --output_dir outputs/quickstart_seed_K

`--seed` sets the model's initialisation, the augmentation (drawn per image from the seed, the
epoch and the image id) and the order of the training batches; `split_seed` stays at the
config's value (42), so every seed is scored on the same 180 validation photographs. The table
(best validation QWK by argmax and its epoch, QWK by the saved cut points, referable-DR AUROC, the
calibrating temperature, the validation ECE before and after calibration; each seed, then mean
and range) is printed and written to
outputs/quickstart_seeds.md and outputs/quickstart_seeds.json. `--table-only` reads runs already
in outputs/ and trains nothing.
"""

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

SYNTHETIC = ["make-synthetic", "--output", "data/synthetic", "--num-images", "900"]
SYNTHETIC += ["--image-size", "160", "--overwrite"]
COLUMNS = {
    "best_qwk": "best QWK (argmax)",
    "best_epoch": "epoch",
    "qwk_cut_points": "QWK by the saved cut points",
    "referable_auroc": "referable AUROC",
    "temperature": "temperature",
    "ece_before": "ECE before",
    "ece_after": "ECE after",
    "minutes": "minutes",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--config", default="configs/quickstart.yaml")
    parser.add_argument("--outputs", default="outputs", help="Folder of the runs and the table.")
    parser.add_argument(
        "--table-only", action="store_true", help="Summarise runs already made; train nothing."
    )
    return parser


def dr_hf_command() -> list[str]:
    found = shutil.which("dr-hf")
    return [found] if found else [sys.executable, "-m", "dr_hf.cli"]


def run_seed(config: str, seed: int, output_dir: Path) -> float:
    """Train one seed; the wall-clock minutes it took."""
    start = time.perf_counter()
    command = [*dr_hf_command(), "train", "--config", config, "--seed", str(seed)]
    subprocess.run([*command, "--output_dir", str(output_dir)], check=True)
    return (time.perf_counter() - start) / 60


def seed_figures(output_dir: Path) -> dict:
    """Best argmax QWK and its epoch (training_history.json, the metric that picks the
    checkpoint); the best model's QWK by its saved grading rule (cut points fitted on the same
    validation photographs, so optimistic), referable-DR AUROC, temperature and ECE before and
    after calibration (eval_results.json) of one run folder."""
    history = json.loads((output_dir / "training_history.json").read_text())
    results = json.loads((output_dir / "eval_results.json").read_text())
    scored = [(q, epoch) for q, epoch in zip(history["val_qwk"], history["epoch"]) if q is not None]
    best_qwk, best_epoch = max(scored)
    calibration = results["calibration"]
    return {
        "best_qwk": best_qwk,
        "best_epoch": round(best_epoch),
        "qwk_cut_points": results["qwk"],
        "referable_auroc": results["referable_auroc"],
        "temperature": calibration["temperature"],
        "ece_before": calibration["ece_before"],
        "ece_after": calibration["ece_after"],
    }


def style(key: str, value: float) -> str:
    if key == "best_epoch":
        return f"{value:.0f}" if float(value).is_integer() else f"{value:.1f}"
    return f"{value:.1f}" if key == "minutes" else f"{value:.3f}"


def spread_table(rows: dict[int, dict]) -> str:
    """One line per seed, then mean and range (min-max) of each column."""
    keys = [key for key in COLUMNS if all(key in row for row in rows.values())]
    lines = ["| seed | " + " | ".join(COLUMNS[key] for key in keys) + " |"]
    lines.append("| --- |" + " --- |" * len(keys))
    for seed, row in sorted(rows.items()):
        lines.append(f"| {seed} | " + " | ".join(style(key, row[key]) for key in keys) + " |")
    values = {key: [row[key] for row in rows.values()] for key in keys}
    mean = [style(key, statistics.fmean(values[key])) for key in keys]
    span = [f"{style(key, min(values[key]))}-{style(key, max(values[key]))}" for key in keys]
    lines.append("| mean | " + " | ".join(mean) + " |")
    lines.append("| range | " + " | ".join(span) + " |")
    return "\n".join(lines)


def main() -> None:
    args = build_parser().parse_args()
    outputs = Path(args.outputs)
    minutes_path = outputs / "quickstart_seeds_minutes.json"
    minutes = json.loads(minutes_path.read_text()) if minutes_path.exists() else {}
    if not args.table_only:
        subprocess.run([*dr_hf_command(), *SYNTHETIC], check=True)
        for seed in args.seeds:
            minutes[str(seed)] = run_seed(args.config, seed, outputs / f"quickstart_seed_{seed}")
            outputs.mkdir(parents=True, exist_ok=True)
            minutes_path.write_text(json.dumps(minutes, indent=2) + "\n")
    rows = {}
    for seed in args.seeds:
        rows[seed] = seed_figures(outputs / f"quickstart_seed_{seed}")
        if str(seed) in minutes:
            rows[seed]["minutes"] = minutes[str(seed)]
    table = spread_table(rows)
    outputs.mkdir(parents=True, exist_ok=True)
    (outputs / "quickstart_seeds.md").write_text(table + "\n")
    (outputs / "quickstart_seeds.json").write_text(json.dumps(rows, indent=2) + "\n")
    print(table)


if __name__ == "__main__":
    main()
