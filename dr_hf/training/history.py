"""The per-epoch training history (`training_history.json`, `train()`'s return value), rebuilt
from the Trainer's log history."""

# Accuracies in the history are percentages (`train_acc`, `val_acc`); other metrics are fractions.
_PERCENT = ("accuracy",)
_TRAIN_KEYS = {"train_loss": "loss", "train_acc": "train_acc", "learning_rate": "learning_rate"}


def build_history(log_history: list[dict]) -> dict[str, list]:
    """One entry per logged epoch value (per epoch by default), in lists keyed by name.

    Keys: `epoch`, `train_loss`, `train_acc`, `learning_rate`, `epoch_time`, `val_loss`, `val_acc`
    and `val_<metric>` for every evaluation metric. Training and evaluation logs are matched by
    their epoch value; a field is None at an epoch where it was not logged (other eval and logging
    strategies, `eval_on_start`). The log history is saved in every checkpoint, so a resumed run's
    history covers the epochs before the interruption too.
    """
    train_by_epoch = {log.get("epoch"): log for log in log_history if "loss" in log}
    eval_by_epoch = {log.get("epoch"): log for log in log_history if "eval_loss" in log}
    epochs = sorted(set(train_by_epoch) | set(eval_by_epoch), key=lambda epoch: epoch or 0.0)
    history: dict[str, list] = {"epoch": epochs}
    for key, logged in {**_TRAIN_KEYS, "epoch_time": "epoch_time"}.items():
        history[key] = [train_by_epoch.get(epoch, {}).get(logged) for epoch in epochs]
    metric_keys = dict.fromkeys(
        key
        for log in eval_by_epoch.values()
        for key in log
        if key.startswith("eval_") and not key.endswith(("_runtime", "_per_second"))
    )
    for key in metric_keys:
        name = key.removeprefix("eval_")
        scale = 100.0 if name in _PERCENT or name.endswith("_acc") else 1.0
        target = "val_acc" if name == "accuracy" else f"val_{name}"
        values = [eval_by_epoch.get(epoch, {}).get(key) for epoch in epochs]
        history[target] = [None if value is None else value * scale for value in values]
    return history
