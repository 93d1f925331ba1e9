"""Class weights, focal loss, and the Trainer's compute_loss_func."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.utils.class_weight import compute_class_weight
from transformers.modeling_outputs import ImageClassifierOutput

from dr_hf.training.losses import FocalLoss, class_weights, make_loss_fn

SKEWED = [0] * 50 + [1] * 10 + [2] * 25 + [3] * 5 + [4] * 10


def test_class_weights_skewed_match_sklearn_balanced():
    expected = compute_class_weight("balanced", classes=np.arange(5), y=np.array(SKEWED))
    for mode in ("auto", "balanced"):
        weights = class_weights(SKEWED, mode=mode)
        assert weights.dtype == torch.float32
        assert torch.allclose(weights, torch.tensor(expected, dtype=torch.float32))
    # mean 1 over the training images: the weighted loss keeps the unweighted scale
    assert weights[torch.tensor(SKEWED)].mean().item() == pytest.approx(1.0)
    assert weights[3] == pytest.approx(100 / (5 * 5)) and weights[0] < 1 < weights[4]
    assert class_weights(SKEWED, mode="none") is None


def test_class_weights_balanced_data():
    labels = [0, 1, 2, 3, 4] * 8 + [0, 0, 0]
    assert class_weights(labels, mode="auto") is None
    assert class_weights([0] * 20 + [1] * 10, num_classes=2, mode="auto") is None  # exactly 2x
    assert class_weights([0] * 21 + [1] * 10, num_classes=2, mode="auto") is not None
    weights = class_weights(labels, mode="balanced")
    assert weights[0] < weights[1] == weights[4]


def test_class_weights_absent_grade_gets_one(caplog):
    labels = [0] * 30 + [1] * 5 + [2] * 5
    with caplog.at_level("WARNING", logger="dr_hf.training.losses"):
        weights = class_weights(labels, mode="balanced")
    assert "[3, 4]" in caplog.text
    assert weights[3] == weights[4] == 1.0
    assert weights[0] == pytest.approx(40 / (3 * 30)) and weights[1] == pytest.approx(40 / 15)
    assert weights[torch.tensor(labels)].mean().item() == pytest.approx(1.0)


@pytest.mark.parametrize(
    "labels, mode, message",
    [([0, 5], "auto", "labels\\[1\\] = 5"), ([], "auto", "empty"), ([0], "inverse", "mode")],
)
def test_class_weights_bad_input(labels, mode, message):
    with pytest.raises(ValueError, match=message):
        class_weights(labels, mode=mode)


@pytest.fixture
def batch():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(16, 5, generator=generator) * 2
    labels = torch.randint(0, 5, (16,), generator=generator)
    return logits, labels


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
@pytest.mark.parametrize("weighted", [False, True])
def test_ce_matches_torch(batch, smoothing, weighted):
    logits, labels = batch
    weight = class_weights(SKEWED) if weighted else None
    expected = F.cross_entropy(logits, labels, weight=weight, label_smoothing=smoothing)
    loss_fn = make_loss_fn("ce", weight=weight, label_smoothing=smoothing)
    outputs = ImageClassifierOutput(logits=logits)
    assert torch.allclose(loss_fn(outputs, labels), expected, atol=1e-6)
    assert torch.allclose(loss_fn({"logits": logits}, labels), expected, atol=1e-6)
    assert torch.allclose(loss_fn((logits,), labels), expected, atol=1e-6)


def test_focal_gamma_zero_is_ce(batch):
    logits, labels = batch
    weight = class_weights(SKEWED)
    focal = make_loss_fn("focal", weight=weight, label_smoothing=0.1, focal_gamma=0.0)
    expected = F.cross_entropy(logits, labels, weight=weight, label_smoothing=0.1)
    assert torch.allclose(focal(ImageClassifierOutput(logits=logits), labels), expected, atol=1e-6)


def test_focal_down_weights_easy_examples():
    labels = torch.tensor([0, 0])
    logits = torch.tensor([[4.0, 0, 0, 0, 0], [0.5, 0, 0, 0, 0]])  # easy, hard
    ce = F.cross_entropy(logits, labels, reduction="none")
    focal = torch.stack(
        [FocalLoss(gamma=2.0)(logits[i : i + 1], labels[i : i + 1]) for i in (0, 1)]
    )
    p_true = logits.softmax(-1)[:, 0]
    assert torch.allclose(focal, (1 - p_true) ** 2 * ce)
    assert (focal / ce)[0] < 0.01 < 0.3 < (focal / ce)[1]
    assert FocalLoss(gamma=2.0)(logits, labels) < F.cross_entropy(logits, labels)


def test_num_items_in_batch_sums_over_the_accumulated_batch(batch):
    logits, labels = batch
    weight = class_weights(SKEWED)
    for kind in ("ce", "focal"):
        loss_fn = make_loss_fn(kind, weight=weight, label_smoothing=0.1)
        per_image = loss_fn.criterion(logits, labels, num_items_in_batch=1.0)
        halves = sum(
            loss_fn({"logits": logits[s]}, labels[s], num_items_in_batch=torch.tensor(16))
            for s in (slice(0, 8), slice(8, 16))
        )
        assert torch.allclose(halves, per_image / 16)
    # weighted: divided by the image count, not by the weight sum
    ce = F.cross_entropy(logits, labels, weight=weight, reduction="sum")
    assert torch.allclose(
        make_loss_fn(weight=weight)(logits, labels, num_items_in_batch=16), ce / 16
    )


def test_weight_follows_logits_dtype_and_ignores_padding(batch):
    logits, labels = batch
    labels = labels.clone()
    labels[:4] = -100
    weight = class_weights(SKEWED).double()
    loss = make_loss_fn("focal", weight=weight)(logits.bfloat16(), labels)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    expected = FocalLoss(weight=weight.float())(logits[4:].bfloat16(), labels[4:])
    assert torch.allclose(loss, expected)


def test_make_loss_fn_rejects_unknown_kind():
    with pytest.raises(ValueError, match="focal"):
        make_loss_fn("mse")
    with pytest.raises(ValueError, match="labels"):
        make_loss_fn()(torch.zeros(2, 5), None)


class _TinyGrader(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.linear = torch.nn.Linear(4, 5)

    def forward(self, x, labels=None):
        return {"logits": self.linear(x)}


def _train_one_step(tmp_path, batch_size, accumulation, loss_fn):
    from datasets import Dataset
    from transformers import Trainer, TrainingArguments

    rng = np.random.default_rng(0)
    data = Dataset.from_dict(
        {"x": rng.normal(size=(8, 4)).tolist(), "labels": [0, 0, 0, 1, 4, 4, 2, 0]}
    ).with_format("torch")
    args = TrainingArguments(
        output_dir=str(tmp_path / f"b{batch_size}"),
        per_device_train_batch_size=batch_size,
        gradient_accumulation_steps=accumulation,
        max_steps=1,
        learning_rate=1.0,
        optim="sgd",
        lr_scheduler_type="constant",
        max_grad_norm=0.0,
        report_to="none",
        use_cpu=True,
        save_strategy="no",
        disable_tqdm=True,
    )
    model = _TinyGrader()
    Trainer(model=model, args=args, train_dataset=data, compute_loss_func=loss_fn).train()
    return model.linear.weight.detach().clone()


def test_trainer_gradient_accumulation_matches_one_big_batch(tmp_path):
    """Weighted CE over two micro-batches of unequal class mix equals one batch of 8."""
    loss_fn = make_loss_fn("ce", weight=class_weights([0, 0, 0, 1, 4, 4, 2, 0, 3]))
    one_batch = _train_one_step(tmp_path, 8, 1, loss_fn)
    accumulated = _train_one_step(tmp_path, 4, 2, loss_fn)
    start = _TinyGrader().linear.weight.detach()
    assert not torch.allclose(one_batch, start)
    assert torch.allclose(one_batch, accumulated, atol=1e-6)


def test_class_weights_from_a_datasets_column():
    from datasets import Dataset

    column = Dataset.from_dict({"label": SKEWED})["label"]
    assert torch.equal(class_weights(column), class_weights(SKEWED))
