"""`dr-hf export --format onnx`: the exported folder grades as the PyTorch model does, through
`dr-hf predict` and without torch, and a broken export is refused or named."""

import json
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest

from dr_hf.cli import main
from dr_hf.config.arguments import ModelArguments
from dr_hf.data.fundus_render import render_fundus
from dr_hf.export import ParityError, export_onnx
from dr_hf.grading_rule import GRADE_RULE_KEY, GradeRule, expected_grade
from dr_hf.inference import load_grader, predict
from dr_hf.metrics import referable_scores
from dr_hf.models.graders import create_model

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")


def photographs(count: int = 5, side: int = 80, seed: int = 7) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [render_fundus(g % 5, side, side, rng)[0] for g in range(count)]


def saved_model(name: str, folder, size: int = 32):
    """A randomly initialised grader saved as training saves one: model and processor."""
    model, processor = create_model(ModelArguments(model_name=name), image_size=size)
    processor.name_in(model.config)
    model.config.dr_hf_operating_points = {"spec_90": {"threshold": 0.3}}
    model.save_pretrained(folder)
    processor.save_pretrained(str(folder))
    return folder


def largest_difference(torch_folder, onnx_folder, images) -> float:
    torch_probs = predict(torch_folder, images, device="cpu").probabilities
    onnx_probs = predict(onnx_folder, images, device="cpu").probabilities
    assert torch_probs.shape == onnx_probs.shape == (len(images), 5)
    return float(np.abs(torch_probs - onnx_probs).max())


@pytest.mark.parametrize("name", ["test_resnet", "retfound_tiny"])
def test_a_full_model_round_trips(tmp_path, name):
    source = saved_model(name, tmp_path / "best")
    done = export_onnx(source, tmp_path / "onnx")
    assert done.exporter in ("dynamo", "torchscript")
    assert done.max_difference <= 1e-4
    config = json.loads((tmp_path / "onnx" / "config.json").read_text())
    assert config["dr_hf_runtime"] == "onnx"
    assert config["dr_hf_operating_points"] == {"spec_90": {"threshold": 0.3}}
    assert {"fundus_processor.py", "preprocessing.py", "dr_hf_onnx_grade.py", "README.md"} <= {
        p.name for p in (tmp_path / "onnx").iterdir()
    }
    assert largest_difference(source, tmp_path / "onnx", photographs()) <= 1e-4
    with pytest.raises(ValueError, match="already an ONNX export"):
        export_onnx(tmp_path / "onnx", tmp_path / "again")


@pytest.mark.slow
def test_a_lora_adapter_is_merged_and_round_trips(trained_lora_run, tmp_path):
    source = trained_lora_run[0] / "best"
    assert (source / "adapter_config.json").is_file()
    export_onnx(source, tmp_path / "onnx")
    assert largest_difference(source, tmp_path / "onnx", photographs()) <= 1e-4


def test_predict_writes_the_same_rows_for_the_exported_folder(trained_run, tmp_path):
    source = trained_run[0] / "best"
    assert main(["export", str(source), "--format", "onnx", "--output", str(tmp_path / "x")]) == 0
    images = tmp_path / "photos"
    images.mkdir()
    for i, array in enumerate(photographs(6)):
        from PIL import Image

        Image.fromarray(array).save(images / f"p{i}.png")
    rows = {}
    for name, model in (("torch", source), ("onnx", tmp_path / "x")):
        out = tmp_path / f"{name}.csv"
        assert main(["predict", "--model", str(model), str(images), "--output", str(out)]) == 0
        rows[name] = pd.read_csv(out)
    a, b = rows["torch"], rows["onnx"]
    assert list(a.columns) == list(b.columns)
    probs = [c for c in a.columns if c.startswith("prob_")]
    assert probs and np.abs(a[probs].to_numpy() - b[probs].to_numpy()).max() <= 1e-4
    others = [c for c in a.columns if c not in probs and not c.startswith("p_")]
    pd.testing.assert_frame_equal(a[others], b[others])
    assert (
        main(["predict", "--model", str(tmp_path / "x"), str(images), "--heatmaps", str(tmp_path)])
        == 2
    )


def test_a_parity_failure_writes_nothing(tmp_path, capsys):
    source = saved_model("test_resnet", tmp_path / "best")
    with pytest.raises(ParityError, match="differ from PyTorch's by"):
        export_onnx(source, tmp_path / "onnx", tolerance=-1.0)
    assert not (tmp_path / "onnx").exists()
    assert not list(tmp_path.glob("onnx*"))


TORCH_FREE = textwrap.dedent(
    """
    import json, sys
    sys.modules["torch"] = None          # any import of torch now fails
    sys.modules["transformers"] = None
    sys.path.insert(0, sys.argv[1])
    import dr_hf_onnx_grade
    rows = dr_hf_onnx_grade.OnnxGrader(sys.argv[1]).grade(sys.argv[2:])
    print(json.dumps(rows))
    """
)


@pytest.mark.parametrize("rule", ["argmax", "thresholds"])
def test_the_exported_folder_grades_without_torch(tmp_path, rule):
    from PIL import Image

    source = saved_model("retfound_tiny", tmp_path / "best")
    files = []
    for i, array in enumerate(photographs(6)):
        files.append(tmp_path / f"p{i}.png")
        Image.fromarray(array).save(files[-1])
    expected = predict(source, files, device="cpu")
    decided = GradeRule()
    if rule == "thresholds":  # cut points between the photographs' expected grades
        scores = np.sort(expected_grade(expected.probabilities))
        decided = GradeRule("thresholds", (scores[:-1] + scores[1:])[[0, 1, 2, 4]] / 2)
        config = json.loads((source / "config.json").read_text())
        (source / "config.json").write_text(json.dumps(config | {GRADE_RULE_KEY: decided.record()}))
    export_onnx(source, tmp_path / "onnx")
    ran = subprocess.run(
        [sys.executable, "-c", TORCH_FREE, str(tmp_path / "onnx"), *map(str, files)],
        capture_output=True,
        text=True,
        check=True,
    )
    rows = json.loads(ran.stdout)
    got = np.array([row["probabilities"] for row in rows])
    assert np.abs(got - expected.probabilities).max() <= 1e-4
    grades = decided.grades(expected.probabilities)
    assert [row["grade"] for row in rows] == grades.tolist()
    assert {row["grade_rule"] for row in rows} == {rule}
    if rule == "thresholds":
        assert len(set(grades.tolist())) >= 3
    referable = referable_scores(expected.probabilities) >= 0.3  # the saved spec90 point
    assert [row["referable"] for row in rows] == referable.tolist()


def test_a_truncated_model_onnx_is_named(tmp_path):
    source = saved_model("test_resnet", tmp_path / "best")
    export_onnx(source, tmp_path / "onnx")
    file = tmp_path / "onnx" / "model.onnx"
    file.write_bytes(file.read_bytes()[:1000])
    with pytest.raises(ValueError, match=r"model\.onnx cannot be loaded"):
        load_grader(tmp_path / "onnx")
    images = tmp_path / "p.png"
    from PIL import Image

    Image.fromarray(photographs(1)[0]).save(images)
    assert main(["predict", "--model", str(tmp_path / "onnx"), str(images)]) == 2


PROCESSOR_WITHOUT_TORCH = textwrap.dedent(
    """
    import sys
    sys.modules["torch"] = None
    import numpy as np
    from transformers import AutoImageProcessor
    sys.path.insert(0, sys.argv[1])
    import dr_hf_onnx_grade
    processor = AutoImageProcessor.from_pretrained(sys.argv[1], trust_remote_code=True)
    assert type(processor).__name__ == "FundusImageProcessor", type(processor)
    from PIL import Image
    mine = processor(Image.open(sys.argv[2]), return_tensors="np")["pixel_values"][0]
    script = dr_hf_onnx_grade.OnnxGrader(sys.argv[1]).pixel_values(sys.argv[2])
    print(float(np.abs(mine - script).max()))
    """
)


def test_the_saved_processor_loads_with_transformers_but_without_torch(tmp_path):
    source = saved_model("test_resnet", tmp_path / "best")
    export_onnx(source, tmp_path / "onnx")
    file = tmp_path / "p.png"
    from PIL import Image

    Image.fromarray(photographs(1)[0]).save(file)
    ran = subprocess.run(
        [sys.executable, "-c", PROCESSOR_WITHOUT_TORCH, str(tmp_path / "onnx"), str(file)],
        capture_output=True,
        text=True,
    )
    assert ran.returncode == 0, ran.stderr[-2000:]
    assert float(ran.stdout.strip().splitlines()[-1]) == 0.0


@pytest.mark.slow
def test_int8_reports_its_change_and_is_refused_past_the_tolerance(
    trained_run, synthetic_dir, tmp_path, capsys
):
    source = str(trained_run[0] / "best")
    out = tmp_path / "int8"
    flags = ["--quantize", "int8", "--data", str(synthetic_dir)]
    # a tiny 32-pixel model loses more QWK to int8 than a real one: a loose tolerance here
    assert main(["export", source, "--output", str(out), *flags, "--qwk-tolerance", "1"]) == 0
    report = json.loads((out / "quantization.json").read_text())
    labelled = report["labelled"]
    assert labelled["images"] == 60
    assert labelled["qwk_drop"] == pytest.approx(labelled["fp32"]["qwk"] - labelled["int8"]["qwk"])
    assert report["int8_bytes"] < report["fp32_bytes"]
    # a CNN is calibrated on the labelled set's photographs
    assert report["settings"]["family"] == "convolutional"
    assert str(synthetic_dir) in report["settings"]["calibration"]
    assert "QWK" in capsys.readouterr().out
    assert json.loads((out / "config.json").read_text())["dr_hf_onnx"]["quantization"] == "int8"
    # the int8 folder grades through predict like any other
    rows = predict(out, photographs(2), device="cpu")
    assert rows.probabilities.shape == (2, 5)
    # a tolerance no drop can meet refuses the export, with the figures, and writes nothing
    refused = tmp_path / "refused"
    tight = ["--qwk-tolerance", str(labelled["qwk_drop"] - 0.01)]
    assert main(["export", source, "--output", str(refused), *flags, *tight]) == 2
    assert "drops QWK by" in capsys.readouterr().err
    assert not list(tmp_path.glob("refused*"))


@pytest.mark.parametrize(
    ("name", "family", "int8_ops", "fp32_ops"),
    [
        # convolutions quantised statically (QDQ around each Conv), never as ConvInteger
        ("test_resnet", "convolutional", {"QuantizeLinear", "DequantizeLinear"}, {"Conv"}),
        # a ViT's matrix products quantised dynamically; its patch embedding stays fp32
        ("retfound_tiny", "transformer", {"MatMulInteger", "DynamicQuantizeLinear"}, {"Conv"}),
    ],
)
def test_int8_quantises_by_architecture_family(tmp_path, name, family, int8_ops, fp32_ops):
    import onnx

    source = saved_model(name, tmp_path / "best")
    done = export_onnx(source, tmp_path / "int8", quantize="int8")
    settings = json.loads((tmp_path / "int8" / "quantization.json").read_text())["settings"]
    assert settings == done.quantization["settings"]
    assert settings["family"] == family
    assert (settings["calibration"] is None) == (family == "transformer")
    ops = {node.op_type for node in onnx.load(str(tmp_path / "int8" / "model.onnx")).graph.node}
    assert int8_ops | fp32_ops <= ops
    assert "ConvInteger" not in ops
    assert family in (tmp_path / "int8" / "README.md").read_text()


@pytest.mark.slow
def test_the_onnx_benchmark_times_every_runtime_and_size():
    from benchmarks.onnx import bench_onnx, onnx_table

    report = bench_onnx(("test_resnet",), 32, (1, 2), repeats=1, min_seconds=0.01, threads=1)
    (result,) = report["results"]
    assert set(result["images_per_s"]) == {
        f"{runtime}, batch {b}"
        for runtime in ("pytorch", "onnxruntime_fp32", "onnxruntime_int8")
        for b in (1, 2)
    }
    assert all(rate["median"] > 0 for rate in result["images_per_s"].values())
    assert result["file_mb"]["onnxruntime_int8"] <= result["file_mb"]["onnxruntime_fp32"]
    assert set(result["speedup_over_pytorch"]) == {
        k for k in result["images_per_s"] if not k.startswith("pytorch")
    }
    memory = result["peak_rss_mib"]
    # each runtime's peak is its own process's: the torch-free grader holds no torch
    assert memory["batch_size"] == 2 and report["threads"] == 1
    for runtime in ("onnxruntime_fp32", "onnxruntime_int8"):
        assert 0 < memory[f"{runtime}, without torch"] < memory[runtime]
    assert "peak RSS" in onnx_table(report)


@pytest.mark.slow
def test_the_demo_grades_an_exported_folder_and_its_space_needs_onnxruntime(tmp_path):
    pytest.importorskip("gradio")
    from PIL import Image

    from dr_hf.demo.grading import grade_photo
    from dr_hf.demo.space import export_space

    source = saved_model("test_resnet", tmp_path / "best")
    export_onnx(source, tmp_path / "onnx")
    file = tmp_path / "p.png"
    Image.fromarray(photographs(1)[0]).save(file)
    answers = [
        grade_photo(load_grader(folder, device="cpu"), str(file), None)
        for folder in (source, tmp_path / "onnx")
    ]
    assert answers[1].error is None
    assert answers[0].summary == answers[1].summary
    space = export_space(tmp_path / "onnx", tmp_path / "space")
    requirements = (space / "requirements.txt").read_text()
    assert "onnxruntime==" in requirements and "grad-cam" not in requirements
    assert (space / "model" / "model.onnx").is_file()


@pytest.mark.slow
def test_evaluate_reports_the_same_metrics_for_the_exported_folder(
    trained_run, synthetic_dir, tmp_path
):
    from dr_hf.config.arguments import DataArguments
    from dr_hf.evaluation.evaluate import evaluate_model

    source = trained_run[0] / "best"
    export_onnx(source, tmp_path / "onnx")
    data = DataArguments(data_dir=str(synthetic_dir))
    metrics = {
        name: evaluate_model(folder, data, tmp_path / f"eval-{name}", bootstrap=0)
        for name, folder in (("torch", source), ("onnx", tmp_path / "onnx"))
    }
    for key in ("qwk", "accuracy", "referable_auroc"):
        assert metrics["onnx"][key] == pytest.approx(metrics["torch"][key], abs=1e-4), key
    with pytest.raises(ValueError, match="gradients"):
        evaluate_model(tmp_path / "onnx", data, tmp_path / "eval-heatmaps", heatmaps=2)
