"""The Markdown tables of `benchmarks.gpu`'s results."""


def _rate(stats: dict) -> str:
    return f"{stats['median']:,.0f} ({stats['min']:,.0f}-{stats['max']:,.0f})"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f} %"


def _mib(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def _model_rows(results: dict) -> list[str]:
    lines = [
        "| model | trainable params | GFLOPs per image (fwd+bwd) | run | batch | images/s "
        "(median, min-max) | MFU | peak memory (MiB) | warm-up (s) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for label, case in results["model"].items():
        if "error" in case:
            lines.append(f"| {label} | failed: {case['error']} |||||||")
            continue
        gflops = case["flops_per_image"] / 1e9
        for mode, runs in case["runs"].items():
            for batch, run in runs.items():
                lines.append(
                    f"| {label} | {case['trainable']:,} | {gflops:.3g} | {mode} | {batch} | "
                    f"{_rate(run['images_per_s'])} | {_pct(run['mfu'])} | "
                    f"{_mib(run['peak_memory_mib'])} | {run['warmup_s']} |"
                )
    return lines


def _same_batch_model_rate(results: dict, label: str, batch: int) -> float | None:
    model = results["model"].get(label.split(", augmentation")[0], {})
    run = model.get("runs", {}).get("eager", {}).get(str(batch))
    return run["images_per_s"]["median"] if run else None


def _train_rows(results: dict) -> list[str]:
    lines = [
        "| dr-hf train | batch | workers | images/s | MFU | waiting for data "
        "| share of model-only (eager, same batch) | peak memory (MiB) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for label, case in results["train"].items():
        if "error" in case:
            lines.append(f"| {label} | failed: {case['error']} |||||||")
            continue
        rate = case["images_per_s"]["median"]
        peak, flops = case.get("peak_tflops"), case.get("flops_per_image")
        mfu = rate * flops / (peak * 1e12) if peak and flops else None
        model_rate = _same_batch_model_rate(results, label, case["batch_size"])
        share = rate / model_rate if model_rate else None
        lines.append(
            f"| {label} | {case['batch_size']} | {case['workers']} | {rate:,.0f} | {_pct(mfu)} "
            f"| {_pct(case['data_wait_share'])} | {_pct(share)} | {_mib(case['peak_memory_mib'])} |"
        )
    return lines


def _inference_rows(results: dict) -> list[str]:
    lines = ["| inference (bf16) | TTA | images/s (median, min-max) |", "|---|---|---|"]
    for label, case in results["inference"].items():
        if "error" in case:
            lines.append(f"| {label} | failed: {case['error']} ||")
            continue
        for tta, stats in case["images_per_s"].items():
            lines.append(f"| {label} | {tta} | {_rate(stats)} |")
    return lines


def to_markdown(results: dict) -> str:
    s = results["settings"]
    peak = results.get("peak_tflops")
    lines = [
        f"Device: {results['device_name']}; {s['image_size']} px, bf16; dense bf16 peak "
        f"{f'{peak:g} TFLOPS' if peak else 'unknown (pass --peak-tflops)'}; model-only: "
        f"{s['repeats']} blocks of {s['steps']} steps after {s['warmup']} warm-up steps.",
        "",
    ]
    if results["model"]:
        lines += [
            "### The model alone (random tensors on the device)",
            "",
            *_model_rows(results),
            "",
        ]
    if results["train"]:
        lines += [
            f"### dr-hf train end to end ({s['train_images']}-image raw uint8 cache, "
            f"{s['train_steps']} steps, the first {s['train_skip']} not timed)",
            "",
            *_train_rows(results),
            "",
        ]
    if results["inference"]:
        lines += ["### Inference", "", *_inference_rows(results), ""]
    return "\n".join(lines)
