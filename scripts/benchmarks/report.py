"""Summaries of repeated timings, the machine they ran on, and the Markdown table of a run."""

import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence

import torch


def summarize(values: Sequence[float], digits: int = 3) -> dict:
    """Median, min and max of the runs, and the runs themselves."""
    values = [float(v) for v in values]
    return {
        "median": round(statistics.median(values), digits),
        "min": round(min(values), digits),
        "max": round(max(values), digits),
        "runs": [round(v, digits) for v in values],
    }


def timed_rate(work: Callable[[], int], min_seconds: float) -> float:
    """Items per second of `work` (which returns how many items it processed), called again
    until at least `min_seconds` have passed so that fast variants are not timed on noise."""
    items, start = 0, time.perf_counter()
    while True:
        items += work()
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds:
            return items / elapsed


def machine_info() -> dict:
    """CPU, cores, threads, versions and the load average (other processes share the cores)."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as file:
            cpu = next(line.split(":", 1)[1].strip() for line in file if "model name" in line)
    except (OSError, StopIteration):
        pass
    import albumentations
    import datasets
    import transformers

    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average": [round(v, 2) for v in os.getloadavg()],
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "datasets": datasets.__version__,
        "albumentations": albumentations.__version__,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def _cell(stats: dict | None, unit: str = "") -> str:
    if not stats:
        return "-"
    return f"{stats['median']:g}{unit} ({stats['min']:g}-{stats['max']:g})"


def _target(value: float | None, target: float) -> str:
    if value is None:
        return "-"
    return "yes" if value >= target else "**no**"


def to_markdown(results: dict) -> str:
    """The tables of every section present in `results`: median (min-max) over the runs."""
    lines = []
    machine = results.get("machine", {})
    if machine:
        lines += [
            f"Machine: {machine['cpu']}, {machine['cores']} cores, torch {machine['torch']} "
            f"({machine['torch_threads']} threads); load average at start "
            f"{machine['load_average']}, at end {results.get('load_average_end', '-')}.",
            "",
        ]
    if "data" in results:
        lines += _data_table(results["data"])
    if "cache_formats" in results:
        lines += _formats_table(results["cache_formats"])
    if "trainer" in results:
        lines += _trainer_table(results["trainer"])
    if "lora" in results:
        lines += _lora_table(results["lora"])
    if "inference" in results:
        lines += _inference_table(results["inference"])
    if "pointing" in results:
        lines += _pointing_table(results["pointing"])
    if "cv_ensemble" in results:
        lines += _cv_ensemble_table(results["cv_ensemble"])
    if "heads" in results:
        lines += heads_table(results["heads"])
    if "demo_load" in results:
        lines += _demo_load_table(results["demo_load"])
    return "\n".join(lines).rstrip() + "\n"


def _data_table(data: dict) -> list[str]:
    lines = [
        f"### Data pipeline: images/s to a collated `pixel_values` batch "
        f"({data['num_images']} photos of {data['width']}x{data['height']}, batch "
        f"{data['batch_size']}, median (min-max) of {data['repeats']} runs)",
        "",
        "| format | size | workers | a: hand-written (OpenCV) | b: dr_hf on raw files "
        "| c: dr_hf on prepared cache | b/a (>= 1.0) | c/a (>= 5) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in data["rows"]:
        b_ratio, c_ratio = row["ratio_b_a"], row["ratio_c_a"]
        lines.append(
            f"| {row['format']} | {row['size']} | {row['workers']} | {_cell(row['a'])} "
            f"| {_cell(row['b'])} | {_cell(row['c'])} | {_cell(b_ratio)} "
            f"{_target(b_ratio['median'], 1.0)} | {_cell(c_ratio)} "
            f"{_target(c_ratio['median'], 5.0)} |"
        )
    return [*lines, ""]


def _formats_table(formats: dict) -> list[str]:
    """Per-core rates, and the cores that would feed 4,000 images/s at each."""
    lines = [
        f"### Images/s per core to a collated batch at {formats['image_size']} px (batch "
        f"{formats['batch_size']}, {formats['num_images']} photos of "
        f"{'x'.join(map(str, formats['photo_size']))}; one process, one thread"
        f"{', pinned' if formats['pinned'] else ''})",
        "",
        "| source | mode | images/s per core | cores for 4,000 images/s |",
        "|---|---|---|---|",
    ]
    for row in formats["rows"]:
        rate = row["images_per_s"]
        lines.append(
            f"| {row['source']} | {row['mode']} | {_cell(rate)} | {4000 / rate['median']:.1f} |"
        )
    return [*lines, ""]


def _trainer_table(trainer: dict) -> list[str]:
    ratio = trainer["ratio"]
    return [
        f"### Trainer overhead: {trainer['model']} at {trainer['image_size']} px, batch "
        f"{trainer['batch_size']}, {trainer['steps']} steps, data in memory, on "
        f"{trainer.get('device', 'cpu')} ({trainer['repeats']} runs)",
        "",
        f"Optimizer: hand-written {trainer['optimizer']['manual']}, Trainer "
        f"{trainer['optimizer']['trainer']}; gradients clipped at {trainer['max_grad_norm']:g} "
        "in both.",
        "",
        "| loop | steps/s |",
        "|---|---|",
        f"| hand-written PyTorch (forward, loss, backward, clip, AdamW) "
        f"| {_cell(trainer['manual'])} |",
        f"| dr_hf `DRTrainer` (HF Trainer) | {_cell(trainer['trainer'])} |",
        f"| ratio Trainer / hand-written (>= 0.95) | {_cell(ratio)} "
        f"{_target(ratio['median'], 0.95)} |",
        f"| steady state after step 1: hand-written / Trainer | {_cell(trainer['manual_steady'])}"
        f" / {_cell(trainer['trainer_steady'])} |",
        f"| steady-state ratio | {_cell(trainer['ratio_steady'])} |",
        "",
    ]


def _lora_table(lora: dict) -> list[str]:
    full, adapted = lora["full"], lora["lora"]
    mib = 1 / 2**20

    def pair(key: str, scale: float = 1.0, digits: int = 2) -> str:
        return f"{full[key] * scale:,.{digits}f} | {adapted[key] * scale:,.{digits}f}"

    lines = [
        f"### LoRA (r={lora['lora_r']}, {lora['targets']}) against full fine-tuning: "
        f"{lora['model']} at {lora['image_size']} px, batch {lora['batch_size']}",
        "",
        "| measure | full | LoRA |",
        "|---|---|---|",
        f"| trainable parameters | {full['trainable']:,} | {adapted['trainable']:,} |",
        f"| optimizer state (MiB) | {pair('optimizer_state_bytes', mib, 3)} |",
        f"| peak RSS over the model's (MiB, median of runs) | {pair('peak_rss_delta_bytes', mib)} |",
        f"| step time (ms, median) | {pair('step_ms', 1.0, 1)} |",
        f"| saved folder (KiB) | {pair('saved_bytes', 1 / 1024, 1)} |",
    ]
    vit_l = lora.get("vit_l")
    if vit_l:
        lines += [
            "",
            f"RETFound ViT-L (from parameter counts, {vit_l['dtype']}): LoRA r={lora['lora_r']} "
            f"trains {vit_l['lora_trainable']:,} of {vit_l['total']:,} parameters; adapter "
            f"{vit_l['adapter_mib']:.2f} MiB against {vit_l['full_mib']:,.0f} MiB for the full "
            f"model = {vit_l['adapter_pct']:.3f} % (target < 1 %: "
            f"{'yes' if vit_l['adapter_pct'] < 1 else 'no'}); AdamW state "
            f"{vit_l['lora_adam_mib']:.1f} MiB against {vit_l['full_adam_mib']:,.0f} MiB.",
        ]
    return [*lines, ""]


def _cv_ensemble_table(cv: dict) -> list[str]:
    singles = ", ".join(f"{q:.3f}" for q in cv["held_out_single_fold_qwk"])
    return [
        f"### Cross-validation and ensemble: {cv['folds']}-fold CV of {cv['config']} "
        f"({cv['epochs']} epochs) on {cv['num_train']} synthetic photographs, graded on "
        f"{cv['num_test']} held-out ones",
        "",
        "| | QWK |",
        "|---|---|",
        f"| CV, mean of the folds (validation) | {cv['cv_mean_fold_qwk']:.3f} |",
        f"| CV, out of fold | {cv['cv_out_of_fold_qwk']:.3f} |",
        f"| held out, each fold model | {singles} |",
        f"| held out, mean single fold model | {cv['held_out_mean_single_fold_qwk']:.3f} |",
        f"| held out, {cv['folds']}-fold ensemble | {cv['held_out_ensemble_qwk']:.3f} |",
        "",
    ]


def heads_table(heads: dict) -> list[str]:
    """Held-out QWK, referable AUROC and macro F1 per label noise and head + rule."""

    def cell(entry: dict, name: str) -> str:
        sd = entry.get(f"{name}_sd")
        return f"{entry[name]:.3f}" + ("" if sd is None else f" ± {sd:.3f}")

    overrides = ", ".join(f"{k}={v}" for k, v in heads["overrides"].items())
    lines = [
        f"### Heads and grading rules: {heads['config']} ({heads['epochs']} epochs"
        f"{', ' + overrides if overrides else ''}) on {heads['num_train']} synthetic "
        f"photographs, graded on {heads['num_test']} held-out ones; mean ± sd over seeds "
        f"{heads['seeds']}",
        "",
        "| training grades moved | head + rule | QWK | referable AUROC | macro F1 |",
        "|---|---|---|---|---|",
    ]
    for entry in heads["table"]:
        lines.append(
            f"| {entry['noise']:.0%} | {entry['head']} + {entry['rule']} | "
            f"{cell(entry, 'qwk')} | {cell(entry, 'referable_auroc')} | "
            f"{cell(entry, 'macro_f1')} |"
        )
    return [*lines, ""]


def _pointing_table(pointing: dict) -> list[str]:
    return [
        f"### Heatmaps: pointing game, {pointing['model']}, {pointing['referable_images']} "
        f"referable synthetic photographs at {pointing['image_size']} px",
        "",
        "| hit | Grad-CAM peak | random point |",
        "|---|---|---|",
        f"| inside a lesion | {pointing['pointing_game']:.3f} | {pointing['random_point']:.3f} |",
        f"| within {pointing['tolerance_px']} px of a lesion | "
        f"{pointing['pointing_game_tolerant']:.3f} | {pointing['random_point_tolerant']:.3f} |",
        "",
    ]


def _inference_table(inference: dict) -> list[str]:
    lines = [
        f"### Inference: images/s, {inference['model']} at {inference['image_size']} px, "
        f"{inference['num_images']} photos, batch {inference['batch_size']}, TTA = "
        f"{inference['tta_views']} views ({inference['method']})",
        "",
        "| case | images/s |",
        "|---|---|",
    ]
    for name, stats in inference["rates"].items():
        lines.append(f"| {name} | {_cell(stats)} |")
    return [*lines, ""]


def _demo_load_table(load: dict) -> list[str]:
    def seconds(value) -> str:
        return "-" if value is None else f"{value:.2f} s"

    return [
        f"### Demo page under load: {load['users']} users for {load['seconds']:g} s "
        f"({load['model']})",
        "",
        "| requests | graded | bad uploads answered | queue full | failures | requests/s "
        "| latency p50 | latency p95 | server memory before / after | files left |",
        "|---|---|---|---|---|---|---|---|---|---|",
        f"| {load['requests']} | {load['graded']} | {load['handled_error']} | "
        f"{load['queue_full']} | {load['failure']} | {load['requests_per_second']:.2f} | "
        f"{seconds(load['latency_p50_s'])} | {seconds(load['latency_p95_s'])} | "
        f"{load['server_rss_before_mib']:.0f} / {load['server_rss_after_mib']:.0f} MiB | "
        f"{len(load['temporary_files_left'])} |",
        "",
    ]
