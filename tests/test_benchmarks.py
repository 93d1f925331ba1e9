"""Smoke tests of the benchmarks: every section runs its smallest real case (`--smoke`) and
writes its reports.

No timing is asserted: only that each section measured something and reported it.
"""

import json
import math

import pytest

from benchmarks import SECTIONS, run_benchmarks
from benchmarks.formats import MODES as FORMAT_MODES
from benchmarks.formats import SOURCES as FORMAT_SOURCES


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    results = run_benchmarks(out / "results", out / "cache", repeats=1, smoke=True)
    return out / "results", results


def _is_summary(stats: dict, runs: int = 1) -> bool:
    return (
        set(stats) == {"median", "min", "max", "runs"}
        and len(stats["runs"]) == runs
        and stats["min"] <= stats["median"] <= stats["max"]
        and all(math.isfinite(v) and v > 0 for v in stats["runs"])
    )


@pytest.mark.slow
def test_writes_json_and_markdown_with_every_section(tiny_run):
    folder, results = tiny_run
    saved = json.loads((folder / "benchmark.json").read_text())
    assert saved == json.loads(json.dumps(results))
    assert set(SECTIONS) <= set(saved) and saved["smoke"] is True
    assert len(saved["machine"]["load_average"]) == 3 and len(saved["load_average_end"]) == 3
    markdown = (folder / "benchmark.md").read_text()
    for title in ("Data pipeline", "Trainer overhead", "LoRA", "Inference", "Machine:"):
        assert title in markdown
    assert markdown.count("\n| png |") == 1 and markdown.count("\n| jpeg |") == 1


@pytest.mark.slow
def test_data_section_times_reference_raw_and_prepared(tiny_run):
    folder, results = tiny_run
    rows = results["data"]["rows"]
    assert [(r["format"], r["size"], r["workers"]) for r in rows] == [
        ("png", 32, 0),
        ("jpeg", 32, 0),
    ]
    for row in rows:
        for key in ("a", "b", "c", "ratio_b_a", "ratio_c_a"):
            assert _is_summary(row[key]), (key, row[key])
    cache = folder.parent / "cache"
    assert len(list((cache / "jpeg" / "train_images").glob("*.jpg"))) == 6
    assert (cache / "prepared_png_32" / "dr_hf_prepare.json").is_file()


@pytest.mark.slow
def test_trainer_and_inference_sections(tiny_run):
    _, results = tiny_run
    trainer = results["trainer"]
    for key in ("manual", "trainer", "ratio", "manual_steady", "trainer_steady"):
        assert _is_summary(trainer[key]), key
    assert trainer["device"] == "cpu" and trainer["max_grad_norm"] == 1.0
    assert trainer["optimizer"] == {"manual": "AdamW (fused)", "trainer": "AdamW (fused)"}
    rates = results["inference"]["rates"]
    with_tta = ("predict on files (gradeability checked)", "model forward on tensors")
    without = (
        "predict on files, no gradeability check",
        "gradeability check alone (decode + verdict)",
        "predict + Grad-CAM figure per image",
    )
    assert set(rates) == {f"{case}, {tta}" for case in with_tta for tta in ("TTA", "no TTA")} | {
        f"{case}, no TTA" for case in without
    }
    assert all(_is_summary(stats) for stats in rates.values())


@pytest.mark.slow
def test_pointing_section_scores_heatmaps_against_a_random_point(tiny_run):
    folder, results = tiny_run
    pointing = results["pointing"]
    assert pointing["referable_images"] >= 1 and pointing["with_lesions_in_view"] >= 1
    # Each pointing game is a share of at most `referable_images` images (hits / images scored);
    # the random-point baseline is a mean mask coverage, neither 0 nor the whole image.
    for key in ("pointing_game", "pointing_game_tolerant"):
        share = pointing[key]
        scored = range(1, pointing["referable_images"] + 1)
        assert any(share * k == pytest.approx(round(share * k), abs=1e-9) for k in scored), key
    assert 0.0 < pointing["random_point"] < pointing["random_point_tolerant"] < 1.0
    assert "pointing game" in (folder / "benchmark.md").read_text()


@pytest.mark.slow
def test_lora_section_compares_against_full_tuning(tiny_run):
    _, results = tiny_run
    lora, full = results["lora"]["lora"], results["lora"]["full"]
    assert lora["total"] == full["total"] and 0 < lora["trainable"] < full["trainable"]
    assert 0 < lora["optimizer_state_bytes"] < full["optimizer_state_bytes"]
    assert "adapter_model.safetensors" in lora["saved_files"]
    assert "dr_hf_base.safetensors" not in lora["saved_files"]  # the base came from a file
    assert lora["saved_bytes"] < full["saved_bytes"]
    assert lora["peak_rss_delta_bytes"] > 0 and full["peak_rss_delta_bytes"] > 0
    vit_l = results["lora"]["vit_l"]
    assert (vit_l["lora_trainable"], vit_l["total"]) == (793_605, 303_306_757)
    assert vit_l["adapter_pct"] < 1


def test_the_script_runs_every_section_smoke_sized_and_the_standalone_ones():
    import importlib

    import benchmark  # scripts/benchmark.py

    for flag in ("--smoke", "--tiny"):  # --tiny: the earlier name
        args = benchmark.build_parser().parse_args([flag])
        assert args.smoke is True and args.sections == list(SECTIONS)
    for name in benchmark.STANDALONE:
        assert callable(importlib.import_module(f"benchmarks.{name}").main)


def test_unknown_section_is_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown section"):
        run_benchmarks(tmp_path, tmp_path, sections=("gpu",), smoke=True)


def test_trainer_section_refuses_an_unusable_device():
    import torch

    from benchmarks.trainer import bench_trainer

    with pytest.raises(ValueError, match="choose one of cpu, cuda"):
        bench_trainer(device="tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA GPU"):
            bench_trainer(device="cuda")


@pytest.mark.slow
def test_gpu_script_smoke_on_cpu(tmp_path):
    from benchmarks.gpu import MODEL_CASES, main

    argv = ["--smoke", "--sections", "model", "inference", "--no-compile"]
    results = main([*argv, "--output", str(tmp_path)])
    assert set(results["model"]) == {case[0] for case in MODEL_CASES.values()}
    lora = results["model"]["RETFound ViT-L LoRA r=8"]
    full = results["model"]["RETFound ViT-L full"]
    assert lora["trainable"] < full["trainable"]
    assert lora["flops_per_image"] < full["flops_per_image"]  # no weight gradients through LoRA
    for case in results["model"].values():
        assert set(case["runs"]["eager"]) == {"2", str(case["largest_batch"])}
        assert all(run["images_per_s"]["median"] > 0 for run in case["runs"]["eager"].values())
        assert case["runs"]["compiled"] == {}
    assert "| RETFound ViT-L bf16 | TTA |" in (tmp_path / "benchmark_gpu.md").read_text()


@pytest.mark.slow
def test_cv_ensemble_section_compares_the_ensemble_with_its_folds(tiny_run):
    folder, results = tiny_run
    cv = results["cv_ensemble"]
    assert cv["folds"] == 3 and len(cv["held_out_single_fold_qwk"]) == 3
    assert cv["held_out_mean_single_fold_qwk"] == pytest.approx(
        sum(cv["held_out_single_fold_qwk"]) / 3
    )
    summary = json.loads((folder.parent / "cache" / "cv_run" / "cv_summary.json").read_text())
    assert cv["cv_out_of_fold_qwk"] == summary["metrics"]["qwk"]["out_of_fold"]
    assert math.isfinite(cv["held_out_ensemble_qwk"])  # defined on the held-out set
    assert "ensemble" in (folder / "benchmark.md").read_text()


@pytest.mark.slow
def test_cache_formats_section_rates_every_source_both_ways(tiny_run):
    folder, results = tiny_run
    rows = results["cache_formats"]["rows"]
    assert [(r["source"], r["mode"]) for r in rows] == [
        (source, mode) for source in FORMAT_SOURCES for mode in FORMAT_MODES.values()
    ]
    assert all(_is_summary(row["images_per_s"]) for row in rows)
    markdown = (folder / "benchmark.md").read_text()
    assert "Images/s per core" in markdown and "| raw uint8 cache |" in markdown
    assert (
        json.loads(
            (folder.parent / "cache" / "prepared_raw_32" / "dr_hf_prepare.json").read_text()
        )["format"]
        == "raw"
    )


@pytest.mark.slow
def test_gpu_benchmark_smoke_measures_model_and_dr_hf_train(tmp_path):
    """`scripts/benchmark_gpu.sh --smoke` on one model: the model alone (eager, MFU against a
    given peak) and dr-hf train with augmentation on the CPU and on the device."""
    from benchmarks.gpu import main as gpu_main

    argv = ["--smoke", "--sections", "model", "train", "--models", "resnet50", "--no-compile"]
    results = gpu_main([*argv, "--peak-tflops", "1", "--output", str(tmp_path)])
    saved = json.loads((tmp_path / "benchmark_gpu.json").read_text())
    assert saved["model"] == json.loads(json.dumps(results["model"]))
    model = saved["model"]["resnet50 full"]
    assert model["flops_per_image"] > 0 and model["largest_batch"] >= 2
    for run in model["runs"]["eager"].values():
        rate = run["images_per_s"]["median"]
        assert run["mfu"] == pytest.approx(rate * model["flops_per_image"] / 1e12, rel=1e-2)
    for augment_on in ("cpu", "gpu"):
        case = saved["train"][f"resnet50 full, augmentation on {augment_on}"]
        assert "error" not in case, case
        assert case["images_per_s"]["median"] > 0 and 0 <= case["data_wait_share"] < 1
        assert case["flops_per_image"] == model["flops_per_image"]
    markdown = (tmp_path / "benchmark_gpu.md").read_text()
    assert "dr-hf train end to end" in markdown and "augmentation on gpu" in markdown


@pytest.mark.slow
def test_demo_load_section_answers_every_request(tiny_run):
    folder, results = tiny_run
    load = results["demo_load"]
    assert load["failure"] == 0 and load["requests"] == load["graded"] + load["handled_error"]
    assert load["graded"] >= 1 and load["temporary_files_left"] == []
    assert "Demo page under load" in (folder / "benchmark.md").read_text()


@pytest.mark.slow
def test_archive_benchmark_measures_each_size(tmp_path):
    from benchmarks.archive import bench_archive

    results = bench_archive(sizes=(6, 12), image_size=48, batch_size=4, workdir=tmp_path)
    assert set(results["sizes"]) == {"6", "12"}  # each run wrote one row per photograph
    for figures in results["sizes"].values():
        assert 100 < figures["peak_pss_with_workers_mib"] and 100 < figures["peak_rss_mib"]
    assert list(tmp_path.iterdir()) == []  # its scratch folder is removed


@pytest.mark.slow
def test_heads_section_grades_every_head_and_rule(tiny_run):
    from benchmarks.heads import COMBINATIONS

    folder, results = tiny_run
    heads = results["heads"]
    assert [(r["head"], r["rule"]) for r in heads["runs"]] == list(COMBINATIONS)
    for run in heads["runs"]:
        assert len(run["cut_points"]) == 4 and run["noise"] == 0.15
        assert 0.0 <= run["macro_f1"] <= 1.0
    assert [(e["head"], e["rule"]) for e in heads["table"]] == list(COMBINATIONS)
    assert all(
        e["seeds"] == 1 and e["qwk"] == r["qwk"] for e, r in zip(heads["table"], heads["runs"])
    )
    assert json.loads((folder / "heads_progress.json").read_text())["runs"] == heads["runs"]
    assert "| 15% | regression + thresholds |" in (folder / "benchmark.md").read_text()


def test_label_noise_moves_the_share_asked_by_one_grade():
    import numpy as np

    from benchmarks.heads import noisy_labels

    labels = np.random.default_rng(0).integers(0, 5, 1000)
    moved = noisy_labels(labels, 0.15, seed=3)
    changed = moved != labels
    assert changed.sum() == 150
    assert np.all(np.abs(moved - labels)[changed] == 1) and moved.min() >= 0 and moved.max() <= 4
    assert np.array_equal(noisy_labels(labels, 0.15, seed=3), moved)
