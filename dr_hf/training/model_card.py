"""The model card (README.md) written beside every exported grader."""

from pathlib import Path

from huggingface_hub import ModelCard, ModelCardData
from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id

from dr_hf.config.arguments import DataArguments, DRTrainingArguments, ModelArguments
from dr_hf.grades import GRADE_NAMES, REFERABLE_MIN_GRADE
from dr_hf.models.retfound import is_retfound
from dr_hf.models.weights import WEIGHT_SUFFIXES

TEMPLATE = Path(__file__).with_name("model_card_template.md")
_HEADLINE_METRICS = (
    ("qwk", "Quadratic weighted kappa"),
    ("accuracy", "Accuracy"),
    ("macro_f1", "Macro F1"),
    ("macro_auroc", "Macro AUROC (one-vs-rest)"),
    ("referable_auroc", "Referable DR AUROC"),
    ("referable_sensitivity", "Referable DR sensitivity"),
    ("referable_specificity", "Referable DR specificity"),
)
_TRAINING_FIELDS = (
    "num_train_epochs",
    "per_device_train_batch_size",
    "learning_rate",
    "weight_decay",
    "lr_scheduler_type",
    "warmup_steps",
    "loss",
    "regression_loss",
    "class_weighting",
    "label_smoothing_factor",
    "layer_decay",
    "seed",
    "fp16",
    "bf16",
)


def _is_hub_id(name: str) -> bool:
    """A Hub model id (user/name) rather than a local weights file or a bare timm name."""
    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return "/" in name and not Path(name).exists() and not name.endswith(WEIGHT_SUFFIXES)


def _plain(value):
    """Enum settings (the scheduler type) by their value, as they are written in a config."""
    return getattr(value, "value", value)


def _data_description(data_args: DataArguments) -> str:
    folders = data_args.data_dir or [data_args.train_csv or data_args.dataset_name or "unspecified"]
    name = "+".join(Path(str(source)).name or str(source) for source in folders)
    validation = (
        " + ".join(data_args.validation_dir or [])
        or data_args.validation_csv
        or f"a stratified {data_args.validation_split:.0%} split of the training data (seed {data_args.split_seed})"
    )
    return f"`{name}`; validation: {validation}"


def _operating_points(points: dict | None) -> list[tuple[str, dict]]:
    """(name as `dr-hf predict --operating-point` spells it, figures rounded) per saved point."""
    rows = []
    for key, point in (points or {}).items():
        if point.get("threshold") is None:
            continue
        figures = {k: round(point[k], 4) for k in ("threshold", "sensitivity", "specificity")}
        rows.append((key.replace("_", ""), figures))
    return rows


_HEADS = {
    "softmax": "softmax (five logits; the pipeline's softmax gives the grade probabilities).",
    "ordinal": "ordinal (CORN: four conditional logits z_k = logit P(grade > k | grade > k-1); the "
    "model returns the class log-probabilities they imply, so the pipeline's softmax gives five "
    "rank-consistent grade probabilities). Loading needs `trust_remote_code=True` "
    "(`ordered_heads.py` in this folder) unless dr_hf is installed.",
    "regression": "regression (one output, the continuous grade; the pipeline returns it as the "
    "score of the label `grade`; no class probabilities). Loading needs `trust_remote_code=True` "
    "(`ordered_heads.py` in this folder) unless dr_hf is installed.",
}


def _decision(results: dict, model_id: str) -> dict | None:
    """What the card says of the head, the saved grade rule and its cut points."""
    record, head = results.get("grade_rule"), results.get("head") or "softmax"
    if not record or not record.get("cut_points"):
        return None
    exact = [float(c) for c in record["cut_points"]]  # the snippet grades exactly as dr_hf does
    cuts = [round(c, 4) for c in exact]
    regression = head == "regression"
    load = f'pipeline("image-classification", model="{model_id}", trust_remote_code=True)'
    if regression:
        snippet = (
            f"from transformers import pipeline\n\ngrader = {load}\n"
            'score = grader("fundus.png")[0]["score"]\n'
            f"grade = sum(score >= c for c in {exact})"
        )
    else:
        snippet = (
            f"from transformers import pipeline\n\ngrader = {load}\n"
            'probability = {p["label"]: p["score"] for p in grader("fundus.png", top_k=5)}\n'
            f"expected = sum(k * probability[name] for k, name in enumerate({GRADE_NAMES}))\n"
            f"grade = sum(expected >= c for c in {exact})"
        )
    return {
        "head_text": _HEADS[head],
        "rule": record.get("rule"),
        "regression": regression,
        "score_name": "score" if regression else "expected grade",
        "cuts": cuts,
        "qwk_default": record.get("qwk_default_cut_points", float("nan")),
        "qwk_fitted": record.get("qwk_fitted", float("nan")),
        "snippet": snippet,
    }


def _usage(model_args: ModelArguments, model_id: str) -> str:
    if not model_args.lora:
        return (
            "```python\nfrom transformers import pipeline\n\n"
            f'grader = pipeline("image-classification", model="{model_id}", trust_remote_code=True)\n'
            'print(grader("fundus.png"))\n```'
        )
    weights = (
        ', retfound_weights="RETFound_cfp_weights.pth"'
        if is_retfound(model_args.model_name)
        else ""
    )
    return (
        "```python\nfrom transformers import AutoImageProcessor, pipeline\n\n"
        "from dr_hf.models import load_trained_model\n\n"
        f'model = load_trained_model("{model_id}"{weights}).merge_and_unload()\n'
        f'processor = AutoImageProcessor.from_pretrained("{model_id}", trust_remote_code=True)\n'
        'grader = pipeline("image-classification", model=model, image_processor=processor)\n'
        'print(grader("fundus.png"))\n```\n\n'
        "The adapter records the SHA-256 of the base weights it was trained on; loading it onto "
        "another base is refused."
    )


def render_model_card(
    data_args: DataArguments,
    model_args: ModelArguments,
    training_args: DRTrainingArguments,
    results: dict,
    base_model: str,
    image_size: int,
    model_id: str = "path/to/this/folder",
) -> ModelCard:
    """A card stating base model, data, label map, best metrics, configuration, usage and limits
    (`model_card_template.md`, filled by huggingface_hub's `ModelCard.from_template`)."""
    is_adapter = model_args.lora
    card_data = ModelCardData(
        library_name="peft" if is_adapter else "transformers",
        pipeline_tag="image-classification",
        tags=["diabetic-retinopathy", "fundus", "ophthalmology", "dr_hf", "timm"]
        + (["lora"] if is_adapter else []),
        base_model=base_model if _is_hub_id(base_model) else None,
    )
    lora = (
        f"LoRA adapters (r={model_args.lora_r}, alpha={model_args.lora_alpha}, dropout={model_args.lora_dropout}, "
        f"targets: {model_args.lora_target_modules or 'default'}); the base weights are not included."
    )
    weights = model_args.pretrained_weights
    return ModelCard.from_template(
        card_data,
        template_path=str(TEMPLATE),
        model_name=model_args.model_name,
        image_size=image_size,
        weights=Path(weights).name if weights else "random initialisation",
        training=lora if is_adapter else "All weights fine-tuned.",
        data=_data_description(data_args),
        grade_names=GRADE_NAMES,
        referable_min_grade=REFERABLE_MIN_GRADE,
        metrics=[
            (label, results[key])
            for key, label in _HEADLINE_METRICS
            if isinstance(results.get(key), float)
        ],
        settings=[
            (name, _plain(getattr(training_args, name)))
            for name in _TRAINING_FIELDS
            if hasattr(training_args, name)
        ],
        usage=_usage(model_args, model_id),
        calibration=results.get("calibration"),
        operating_points=_operating_points(results.get("operating_points")),
        ben_graham=data_args.ben_graham,
        decision=_decision(results, model_id),
    )
