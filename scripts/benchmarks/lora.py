"""LoRA against full fine-tuning of the same ViT: parameters, optimizer state, memory, time, disk.

Each variant trains in a fresh Python process (`python -m benchmarks.lora SPEC`), so the
peak memory of one is not hidden under the other's, nor under the allocator's leftovers. Peak
memory is the process's resident set (VmHWM), reset through /proc/self/clear_refs after the model
and the batch are built, minus the resident set at that moment: it counts gradients, optimizer
state and activations, which live in torch's C++ allocator where tracemalloc sees nothing. The
base is built from a weights file (as a user's RETFound checkpoint), so the adapter folder holds
only the adapter and its base record. The ViT-L figures come from parameter counts on the meta
device, since a CPU cannot train ViT-L in a benchmark's time.
"""

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import safetensors.torch
import torch
import torch.nn.functional as F

from benchmarks import subprocess_env
from benchmarks.report import summarize
from dr_hf.config.arguments import ModelArguments
from dr_hf.grades import NUM_GRADES
from dr_hf.models.graders import create_model, parameter_summary
from dr_hf.models.lora import VIT_TARGETS, trained_head

_FLOAT32 = 4
_ADAM_STATES = 2  # exp_avg and exp_avg_sq per trainable parameter


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as file:
        for line in file:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise OSError(f"/proc/self/status has no {field}: peak memory needs Linux.")


def _reset_peak() -> int:
    """Reset the peak resident set to the current one (Linux >= 4.0) and return it, in bytes."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError as error:
        raise OSError(f"cannot reset the peak resident set ({error}): run on Linux.") from error
    return 1024 * _status_kib("VmRSS")


def measure_variant(spec: dict) -> dict:
    """Train one variant a few steps and measure it (run inside its own process)."""
    torch.manual_seed(0)
    args = ModelArguments(
        model_name=spec["model_name"],
        pretrained_weights=spec["weights"],
        lora=spec["lora"],
        lora_r=spec["lora_r"],
    )
    model = create_model(args, image_size=spec["image_size"])[0]
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    size, batch = spec["image_size"], spec["batch_size"]
    pixels = torch.randn(batch, 3, size, size)
    labels = torch.randint(0, NUM_GRADES, (batch,))
    baseline = _reset_peak()
    step_times = []
    for _ in range(spec["steps"]):
        start = time.perf_counter()
        loss = F.cross_entropy(model(pixel_values=pixels).logits, labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step_times.append(time.perf_counter() - start)
    peak = 1024 * _status_kib("VmHWM")
    state_bytes = sum(
        value.numel() * value.element_size()
        for state in optimizer.state.values()
        for value in state.values()
        if torch.is_tensor(value) and value.dim() > 0
    )
    folder = Path(spec["save_dir"])
    model.save_pretrained(str(folder))
    steady = step_times[1:] or step_times
    return {
        **parameter_summary(model),
        "optimizer_state_bytes": state_bytes,
        "peak_rss_delta_bytes": peak - baseline,
        "step_ms": 1000 * sorted(steady)[len(steady) // 2],
        "saved_bytes": sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()),
        "saved_files": sorted(f.name for f in folder.rglob("*") if f.is_file()),
    }


def _run_variant(spec: dict) -> dict:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.lora", json.dumps(spec)],
        env=subprocess_env(),
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"the {'LoRA' if spec['lora'] else 'full'} variant failed:\n{done.stderr[-3000:]}"
        )
    return json.loads(done.stdout.strip().splitlines()[-1])


def _base_weights(model_name: str, image_size: int, path: Path) -> str:
    """A random-weights encoder file standing in for a pre-trained checkpoint."""
    model = create_model(ModelArguments(model_name=model_name), image_size=image_size)[0]
    skip = tuple(f"{name}." for name in trained_head(model.timm_model))
    state = {k: v for k, v in model.timm_model.state_dict().items() if not k.startswith(skip)}
    safetensors.torch.save_file(state, path)
    return str(path)


def vit_l_figures(lora_r: int = 8) -> dict:
    """RETFound ViT-L parameter counts with and without LoRA on qkv, built on the meta device."""
    with torch.device("meta"):
        full = parameter_summary(create_model(ModelArguments(model_name="retfound"))[0])
        adapted = parameter_summary(
            create_model(ModelArguments(model_name="retfound", lora=True, lora_r=lora_r))[0]
        )
    mib = _FLOAT32 / 2**20
    return {
        "dtype": "float32",
        "total": full["total"],
        "lora_trainable": adapted["trainable"],
        "full_mib": full["total"] * mib,
        "adapter_mib": adapted["trainable"] * mib,
        "adapter_pct": 100 * adapted["trainable"] / full["total"],
        "full_adam_mib": _ADAM_STATES * full["trainable"] * mib,
        "lora_adam_mib": _ADAM_STATES * adapted["trainable"] * mib,
    }


def bench_lora(
    model_name: str = "retfound_tiny",
    image_size: int = 224,
    batch_size: int = 8,
    steps: int = 6,
    repeats: int = 3,
    lora_r: int = 8,
    include_vit_l: bool = True,
) -> dict:
    """Full and LoRA variants, alternating, each repeat in a fresh process; medians reported."""
    runs = {"full": [], "lora": []}
    with tempfile.TemporaryDirectory(prefix="dr_hf_bench_lora_") as tmp:
        weights = _base_weights(model_name, image_size, Path(tmp) / "base.safetensors")
        for repeat in range(repeats):
            for name in runs:
                spec = {
                    "model_name": model_name,
                    "weights": weights,
                    "lora": name == "lora",
                    "lora_r": lora_r,
                    "image_size": image_size,
                    "batch_size": batch_size,
                    "steps": steps,
                    "save_dir": str(Path(tmp) / f"{name}_{repeat}"),
                }
                runs[name].append(_run_variant(spec))
    result = {
        "model": model_name,
        "image_size": image_size,
        "batch_size": batch_size,
        "steps": steps,
        "repeats": repeats,
        "lora_r": lora_r,
        "targets": VIT_TARGETS,
    }
    for name, variant_runs in runs.items():
        first = variant_runs[0]
        result[name] = {
            **{k: first[k] for k in ("total", "trainable", "optimizer_state_bytes")},
            **{k: first[k] for k in ("saved_bytes", "saved_files")},
        }
        for key in ("peak_rss_delta_bytes", "step_ms"):
            stats = summarize([run[key] for run in variant_runs])
            result[name][key] = stats["median"]
            result[name][f"{key}_runs"] = stats
    full, adapted = result["full"], result["lora"]
    result["peak_ratio"] = adapted["peak_rss_delta_bytes"] / max(full["peak_rss_delta_bytes"], 1)
    result["saved_ratio"] = adapted["saved_bytes"] / full["saved_bytes"]
    if include_vit_l:
        result["vit_l"] = vit_l_figures(lora_r)
    return result


if __name__ == "__main__":
    import logging

    logging.disable(logging.WARNING)
    print(json.dumps(measure_variant(json.loads(sys.argv[1]))))
