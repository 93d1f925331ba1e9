"""The model folder's FundusImageProcessor: plain transformers grades as `dr-hf predict` does.

The pipelines run in a fresh Python process in which `import dr_hf` fails, so they see only what
the folder carries (its processor code and config) and what transformers, timm, torch, NumPy,
Pillow and OpenCV provide.
"""

import csv
import json
import re
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from PIL import Image
from transformers import AutoConfig, AutoImageProcessor

from dr_hf.cli import predict_main
from dr_hf.config.parsing import config_from_yaml
from dr_hf.data.fundus_processor import FundusImageProcessor
from dr_hf.grades import GRADE_NAMES
from dr_hf.grading_rule import GRADE_RULE_KEY, GradeRule, expected_grade
from dr_hf.inference import predict
from dr_hf.training.run import run_training

QUICKSTART = "configs/quickstart.yaml"
PROCESSOR_FILES = ("preprocessor_config.json", "fundus_processor.py", "preprocessing.py")

# Imports fail for dr_hf and everything below it, whatever is installed.
WITHOUT_DR_HF = textwrap.dedent(
    """
    import sys

    class NoDrHf:
        def find_spec(self, name, path=None, target=None):
            if name == "dr_hf" or name.startswith("dr_hf."):
                raise ImportError("dr_hf is not available in this process")

    sys.meta_path.insert(0, NoDrHf())
    try:
        import dr_hf
    except ImportError:
        pass
    else:
        raise SystemExit("dr_hf could be imported")
    """
)

PIPELINE = WITHOUT_DR_HF + textwrap.dedent(
    """
    import json
    from pathlib import Path

    import torch
    from transformers import AutoImageProcessor, TimmWrapperConfig, pipeline
    from transformers import TimmWrapperForImageClassification

    kind, folder, photos = sys.argv[1], sys.argv[2], sys.argv[3:]
    if kind == "adapter":  # the base from the adapter's record, then the adapter, as PEFT does
        import safetensors.torch
        from peft import PeftModel

        config = json.loads((Path(folder) / "dr_hf_base.json").read_text())
        base = TimmWrapperForImageClassification(TimmWrapperConfig.from_dict(config))
        base.load_state_dict(safetensors.torch.load_file(Path(folder) / "dr_hf_base.safetensors"))
        model = PeftModel.from_pretrained(base, folder).merge_and_unload().eval()
        processor = AutoImageProcessor.from_pretrained(folder, trust_remote_code=True)
        grader = pipeline("image-classification", model=model, image_processor=processor)
    else:
        grader = pipeline("image-classification", model=folder, trust_remote_code=True)
    print(type(grader.image_processor).__name__, file=sys.stderr)
    print(json.dumps([grader(photo, top_k=5) for photo in photos]))
    """
)


def run_without_dr_hf(code: str, *args, cwd) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code, *map(str, args)],
        cwd=cwd, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=300,
    )  # fmt: skip


@pytest.fixture(scope="module")
def wide_photos(synthetic_dir, tmp_path_factory):
    """30 synthetic photographs in a 3:2 frame with wide black margins (disc in the middle)."""
    folder = tmp_path_factory.mktemp("wide")
    for path in sorted((synthetic_dir / "train_images").glob("*.png"))[:30]:
        disc = Image.open(path).convert("RGB")
        side = disc.width
        frame = Image.new("RGB", (round(side * 1.8), round(side * 1.2)))
        frame.paste(disc, ((frame.width - side) // 2, (frame.height - side) // 2))
        frame.save(folder / path.name)
    return sorted(folder.glob("*.png"))


def train_quickstart(synthetic_dir, output_dir, **overrides):
    """The quick-start configuration, briefly: one epoch on the small synthetic set."""
    values = {
        "data_dir": str(synthetic_dir), "output_dir": str(output_dir), "num_train_epochs": 1,
        "image_size": 64, "dataloader_num_workers": 0, "disable_tqdm": True, **overrides,
    }  # fmt: skip
    run_training(*config_from_yaml(QUICKSTART, **values))
    return output_dir / "best"


@pytest.fixture(scope="module")
def quickstart_best(synthetic_dir, tmp_path_factory):
    return train_quickstart(synthetic_dir, tmp_path_factory.mktemp("qs") / "out")


@pytest.fixture(scope="module")
def ben_graham_best(synthetic_dir, tmp_path_factory):
    return train_quickstart(synthetic_dir, tmp_path_factory.mktemp("bg") / "out", ben_graham=True)


def predicted(folder, photos, tmp_path) -> dict[str, np.ndarray]:
    """`dr-hf predict`'s probabilities per photograph, read back from its CSV."""
    output = tmp_path / "preds.csv"
    assert predict_main([*map(str, photos), "--model", str(folder), "--output", str(output)]) == 0
    with open(output) as handle:
        rows = list(csv.DictReader(handle))
    return {row["image"]: np.array([float(row[f"prob_{g}"]) for g in range(5)]) for row in rows}


def piped(kind, folder, photos, tmp_path) -> dict[str, np.ndarray]:
    done = run_without_dr_hf(PIPELINE, kind, folder, *photos, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "FundusImageProcessor" in done.stderr
    answers = json.loads(done.stdout.strip().splitlines()[-1])
    scores = {}
    for photo, answer in zip(photos, answers):
        by_name = {item["label"]: item["score"] for item in answer}
        scores[str(photo)] = np.array([by_name[name] for name in GRADE_NAMES])
    return scores


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["full", "ben_graham", "adapter"])
def test_pipeline_without_dr_hf_grades_as_dr_hf_predict(
    kind, request, wide_photos, trained_lora_run, tmp_path
):
    folder = {
        "full": lambda: request.getfixturevalue("quickstart_best"),
        "ben_graham": lambda: request.getfixturevalue("ben_graham_best"),
        "adapter": lambda: trained_lora_run[0] / "best",
    }[kind]()
    assert all((folder / name).is_file() for name in PROCESSOR_FILES)
    ours = predicted(folder, wide_photos, tmp_path)
    theirs = piped(kind, folder, wide_photos, tmp_path)
    assert set(ours) == set(theirs) and len(ours) == 30
    for photo, probabilities in ours.items():
        assert probabilities.argmax() == theirs[photo].argmax(), photo
        np.testing.assert_allclose(theirs[photo], probabilities, atol=1e-4, err_msg=photo)


def test_every_checkpoint_carries_the_processor(trained_run, trained_lora_run):
    for output_dir in (trained_run[0], trained_lora_run[0]):
        folders = [output_dir, output_dir / "best", *output_dir.glob("checkpoint-*")]
        assert len(folders) >= 3
        for folder in folders:
            assert all((folder / name).is_file() for name in PROCESSOR_FILES), folder
            config = json.loads((folder / "preprocessor_config.json").read_text())
            assert config["auto_map"] == {
                "AutoImageProcessor": "fundus_processor.FundusImageProcessor"
            }
            assert config["size"] == {"height": 32, "width": 32} and config["crop_fov"] is True


GRADING = WITHOUT_DR_HF + textwrap.dedent(
    """
    import json

    from transformers import pipeline

    folder, photos = sys.argv[1], sys.argv[2:]
    grader = pipeline(model=folder, trust_remote_code=True)  # the task config.json names
    print(type(grader).__name__, file=sys.stderr)
    print(json.dumps([grader(photo) for photo in photos]))
    """
)


def with_rule(folder, tmp_path, rule: GradeRule):
    """A copy of the model folder whose config saves `rule`."""
    copy = shutil.copytree(folder, tmp_path / "ruled")
    config = json.loads((copy / "config.json").read_text())
    config[GRADE_RULE_KEY] = rule.record()
    (copy / "config.json").write_text(json.dumps(config))
    return copy


@pytest.mark.slow
@pytest.mark.parametrize("rule", ["saved", "thresholds"])
def test_grading_pipeline_without_dr_hf_decides_by_the_saved_rule(
    rule, quickstart_best, wide_photos, tmp_path
):
    photos = wide_photos[:12]
    ours = predicted(quickstart_best, photos, tmp_path)
    probabilities = np.stack([ours[str(photo)] for photo in photos])
    folder = quickstart_best
    if rule == "thresholds":  # cut points that move grades: 1/4 of the way between the defaults
        scores = expected_grade(probabilities)
        cut_points = np.quantile(scores, [0.2, 0.4, 0.6, 0.8]) + [0.0, 1e-3, 2e-3, 3e-3]
        folder = with_rule(quickstart_best, tmp_path, GradeRule("thresholds", cut_points))
    expected = GradeRule.from_config(AutoConfig.from_pretrained(folder)).grades(probabilities)
    done = run_without_dr_hf(GRADING, folder, *photos, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "DRGradingPipeline" in done.stderr
    answers = json.loads(done.stdout.strip().splitlines()[-1])
    assert [answer["grade"] for answer in answers] == expected.tolist()
    saved_rule = GradeRule.from_config(AutoConfig.from_pretrained(quickstart_best)).rule
    assert {answer["rule"] for answer in answers} == {saved_rule if rule == "saved" else rule}
    if rule == "thresholds":
        assert len(set(expected.tolist())) >= 3
    for answer, probs in zip(answers, probabilities):
        assert answer["label"] == GRADE_NAMES[answer["grade"]]
        shown = np.array([answer["probabilities"][name] for name in GRADE_NAMES])
        np.testing.assert_allclose(shown, probs, atol=1e-4)
        assert answer["score"] == pytest.approx(expected_grade(probs[None])[0], abs=1e-3)


def test_every_saved_folder_names_and_carries_the_grading_pipeline(trained_run, trained_lora_run):
    output_dir = trained_run[0]
    for folder in (output_dir / "best", *output_dir.glob("checkpoint-*")):
        config = json.loads((folder / "config.json").read_text())
        impl = config["custom_pipelines"]["dr-grading"]["impl"]
        assert (folder / f"{impl.split('.')[0]}.py").is_file(), folder
    assert not (trained_lora_run[0] / "best" / "grading_pipeline.py").exists()  # an adapter


def test_auto_image_processor_finds_it_with_dr_hf(trained_run):
    processor = AutoImageProcessor.from_pretrained(trained_run[0] / "best")
    assert type(processor) is FundusImageProcessor
    assert processor.input_side == 32 and processor.crop_fov and not processor.ben_graham


@pytest.mark.slow
def test_without_trust_remote_code_transformers_refuses(trained_run, tmp_path):
    code = WITHOUT_DR_HF + textwrap.dedent(
        """
        from transformers import pipeline

        pipeline("image-classification", model=sys.argv[1])
        """
    )
    done = run_without_dr_hf(code, trained_run[0] / "best", cwd=tmp_path)
    assert done.returncode != 0
    assert "trust_remote_code=True" in done.stderr


@pytest.mark.slow
def test_model_card_snippet_runs_as_written(trained_run, synthetic_dir, tmp_path):
    card = (trained_run[0] / "best" / "README.md").read_text()
    snippet = re.search(r"## How to use.*?```python\n(.*?)```", card, re.S).group(1)
    assert "trust_remote_code=True" in snippet and "OpenCV" in card
    first = sorted((synthetic_dir / "train_images").glob("*.png"))[0]
    shutil.copy(first, tmp_path / "fundus.png")  # the photograph the snippet grades
    done = run_without_dr_hf(WITHOUT_DR_HF + snippet, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    answer = eval(done.stdout.strip().splitlines()[-1])  # the snippet prints the pipeline's list
    assert {item["label"] for item in answer} <= set(GRADE_NAMES)
    expected = predict(trained_run[0] / "best", [first], device="cpu").probabilities[0]
    top = max(answer, key=lambda item: item["score"])
    assert top["label"] == GRADE_NAMES[int(expected.argmax())]
    assert abs(top["score"] - float(expected.max())) < 1e-4


def test_folder_saved_before_the_processor_still_predicts(trained_run, wide_photos, tmp_path):
    best = trained_run[0] / "best"
    old = tmp_path / "old_best"
    shutil.copytree(best, old)
    processor = FundusImageProcessor.from_pretrained(best)
    for name in PROCESSOR_FILES:
        (old / name).unlink()
    record = {
        "image_size": processor.input_side, "crop_fov": processor.crop_fov,
        "ben_graham": processor.ben_graham, "mean": processor.image_mean,
        "std": processor.image_std,
    }  # fmt: skip
    (old / "dr_hf_preprocessing.json").write_text(json.dumps(record))
    now = predict(best, wide_photos[:8], device="cpu").probabilities
    before = predict(old, wide_photos[:8], device="cpu").probabilities
    np.testing.assert_array_equal(now, before)
