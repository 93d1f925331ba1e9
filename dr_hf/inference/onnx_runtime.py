"""Grading with an exported folder's `model.onnx` without torch, transformers or dr_hf.

`dr-hf export --format onnx` copies this file into the folder as `dr_hf_onnx_grade.py`, beside
`preprocessing.py` (the crop, resize and normalisation `dr-hf predict` runs), so that a machine
with only onnxruntime, NumPy, Pillow and OpenCV grades as dr_hf does:

    python dr_hf_onnx_grade.py photo.png [more.png ...]      # one JSON line per photograph

or, from Python, `OnnxGrader(folder).grade(["photo.png"])`. Grades follow the rule saved in
config.json (`dr_hf_grade_rule`: argmax, or cut points on the expected grade or on a regression
model's score), as `dr-hf predict` grades by default. Inside dr_hf, `dr-hf predict` runs
the same session through `dr_hf.inference.onnx_model` and its own grading loop (which adds the
gradeability verdict).
"""

import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

if __package__:  # inside dr_hf
    from dr_hf.data.preprocessing import model_input, normalize, to_rgb
else:  # in an exported folder, beside its preprocessing.py
    from preprocessing import model_input, normalize, to_rgb

ONNX_FILE = "model.onnx"
RUNTIME_KEY = "dr_hf_runtime"
REFERABLE_MIN_GRADE = 2
HEAD_KEY, GRADE_RULE_KEY = "dr_hf_head", "dr_hf_grade_rule"  # as dr_hf.grading_rule names them
GRADE_LABELS = ("No DR", "Mild", "Moderate", "Severe", "Proliferative DR")


def providers() -> list[str]:
    """onnxruntime's CUDA provider where this onnxruntime has it, then the CPU."""
    import onnxruntime

    available = onnxruntime.get_available_providers()
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]


def open_session(file: str | Path, threads: int | None = None):
    """An onnxruntime session of `file`; a missing, corrupt or truncated file is a ValueError
    that names it."""
    import onnxruntime

    file = Path(file)
    if not file.is_file():
        raise FileNotFoundError(f"{file}: no such file; export the model with dr-hf export.")
    options = onnxruntime.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    try:
        return onnxruntime.InferenceSession(str(file), options, providers=providers())
    except Exception as error:  # onnxruntime's own exception types (InvalidProtobuf, Fail, ...)
        raise ValueError(
            f"{file} cannot be loaded by onnxruntime (corrupt or truncated?): {error}. "
            "Export the model again with dr-hf export."
        ) from error


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


class OnnxGrader:
    """An exported folder: its session, processor settings, saved grading rule and operating
    points."""

    def __init__(self, folder: str | Path | None = None, threads: int | None = None):
        self.folder = Path(folder) if folder else Path(__file__).resolve().parent
        self.config = json.loads((self.folder / "config.json").read_text())
        self.processor = json.loads((self.folder / "preprocessor_config.json").read_text())
        self.session = open_session(self.folder / ONNX_FILE, threads)

    def pixel_values(self, image) -> np.ndarray:
        """A photograph (file, PIL image or RGB array) as the model's normalised input."""
        if isinstance(image, str | Path):
            with Image.open(image) as opened:
                opened.seek(0)  # the first frame
                opened.load()
                image = opened.copy()
        if isinstance(image, Image.Image):
            image = to_rgb(ImageOps.exif_transpose(image))
        p = self.processor
        pixels = model_input(image, p["size"]["height"], p["crop_fov"], p["ben_graham"])
        return normalize(pixels, p["image_mean"], p["image_std"])

    @property
    def regression(self) -> bool:
        """A regression model: one score per photograph, no grade probabilities."""
        return self.config.get(HEAD_KEY) == "regression"

    def outputs(self, images: list) -> np.ndarray:
        """Softmax probabilities (N, grades) of the photographs, or a regression model's
        scores (N, 1), in one batch."""
        batch = np.stack([self.pixel_values(image) for image in images])
        (logits,) = self.session.run(None, {"pixel_values": batch})
        logits = logits.astype(np.float64)
        return logits if self.regression else softmax(logits)

    def probabilities(self, images: list) -> np.ndarray:
        """Softmax probabilities (N, grades) of the photographs, in one batch."""
        if self.regression:
            raise ValueError("A regression model has no grade probabilities: see outputs().")
        return self.outputs(images)

    def grades(self, outputs: np.ndarray) -> np.ndarray:
        """The grades the saved rule gives `outputs`: the number of its cut points at or below
        the expected grade (or the score), or the most probable grade (argmax)."""
        rule = self.config.get(GRADE_RULE_KEY) or {}
        if self.regression or rule.get("rule") == "thresholds":
            scores = outputs[:, 0] if self.regression else outputs @ np.arange(outputs.shape[1])
            return np.searchsorted(np.asarray(rule["cut_points"]), scores, side="right")
        return outputs.argmax(axis=1)

    def threshold(self, operating_point: str = "spec90") -> float | None:
        """The saved threshold on P(grade >= 2) of `operating_point`; None (argmax) when none."""
        points = self.config.get("dr_hf_operating_points") or {}
        saved = points.get(f"spec_{operating_point.removeprefix('spec')}") or {}
        return saved.get("threshold")

    def grade(self, images: list, operating_point: str = "spec90") -> list[dict]:
        """Per photograph: grade (by the saved grading rule), its label, probabilities (a
        regression model: its score) and the referable decision (by the saved operating point's
        threshold on P(grade >= 2), or on the score, where the model has one, else by the
        grade)."""
        outputs = self.outputs(images)
        threshold = self.threshold(operating_point) if operating_point != "argmax" else None
        labels = self.config.get("id2label") or {}
        labels = labels if len(labels) == len(GRADE_LABELS) else {}  # a regression model's: 1
        rule = (self.config.get(GRADE_RULE_KEY) or {}).get("rule") or "argmax"
        rows = []
        for output, grade in zip(outputs, self.grades(outputs)):
            grade = int(grade)
            if self.regression:
                referable_score, probabilities = float(output[0]), None
            else:
                referable_score = float(output[REFERABLE_MIN_GRADE:].sum())
                probabilities = [float(p) for p in output]
            referable = (
                grade >= REFERABLE_MIN_GRADE if threshold is None else referable_score >= threshold
            )
            rows.append({
                "grade": grade,
                "label": labels.get(str(grade), GRADE_LABELS[grade]),
                "grade_rule": "thresholds" if self.regression else rule,
                "probabilities": probabilities,
                ("score" if self.regression else "p_referable"): referable_score,
                "referable": bool(referable),
                "rule": operating_point if threshold is not None else "argmax",
            })  # fmt: skip
        return rows


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    grader = OnnxGrader()
    for name, row in zip(argv, grader.grade(argv)):
        print(json.dumps({"image": name, **row}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
