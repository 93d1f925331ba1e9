"""The per-epoch history of the original tool, rebuilt from the Trainer's log history."""

# Accuracies stay in percent, as the original tool reported them; other metrics are fractions.
_PERCENT = ("accuracy",)


def build_history(log_history: list[dict]) -> dict[str, list]:
    """Group the Trainer's logs into lists, one entry per training-loss log (per epoch by default).

    Keys: `epoch`, `train_loss`, `train_acc`, `learning_rate`, `epoch_time`, `val_loss`, `val_acc`
    and `val_<metric>` for every evaluation metric. Because the log history is saved in every
    checkpoint, a resumed run's history covers the epochs before the interruption too.
    """
    train_logs = [log for log in log_history if "loss" in log]
    eval_logs = [log for log in log_history if "eval_loss" in log]
    history: dict[str, list] = {
        "epoch": [log.get("epoch") for log in train_logs],
        "train_loss": [log["loss"] for log in train_logs],
        "train_acc": [log.get("train_acc") for log in train_logs],
        "learning_rate": [log.get("learning_rate") for log in train_logs],
        "epoch_time": [log.get("epoch_time") for log in train_logs],
    }
    keys = [
        k
        for log in eval_logs
        for k in log
        if k.startswith("eval_") and not k.endswith(("_runtime", "_per_second"))
    ]
    for key in dict.fromkeys(keys):
        name = key.removeprefix("eval_")
        scale = 100.0 if name in _PERCENT or name.endswith("_acc") else 1.0
        target = "val_acc" if name == "accuracy" else f"val_{name}"
        history[target] = [None if log.get(key) is None else log[key] * scale for log in eval_logs]
    return history
