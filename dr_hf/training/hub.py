"""Sharing an exported grader on the Hugging Face Hub."""

import logging
from pathlib import Path

from huggingface_hub import HfApi

from dr_hf.config.arguments import DRTrainingArguments
from dr_hf.models.lora import BASE_WEIGHTS

logger = logging.getLogger(__name__)

# Never uploaded: base weights beside an adapter (dr_hf_base.safetensors, any .pth), and anything that may hold credentials.
_NEVER_UPLOAD = [BASE_WEIGHTS, "*.pth", "*.pt", "*.ckpt", ".env", "*token*", "wandb/*"]


def push_best(
    folder: str | Path, training_args: DRTrainingArguments, token: str | None = None
) -> str:
    """Upload the exported `best/` folder (model or adapter, model card, preprocessing) to
    `hub_model_id`; returns the commit URL. The token comes from `token` (`--hub_token`) or the
    usual huggingface_hub login and is never written anywhere."""
    folder = Path(folder)
    repo_id = training_args.hub_model_id
    if not repo_id:
        raise ValueError("push_to_hub needs --hub_model_id user/name.")
    if not (folder / "README.md").is_file():
        raise FileNotFoundError(f"{folder} has no model card (README.md): export the model first.")
    api = HfApi(token=token)
    # None keeps the account's or organisation's default visibility, as the Trainer does.
    api.create_repo(repo_id, private=training_args.hub_private_repo, exist_ok=True)
    commit = api.upload_folder(
        repo_id=repo_id,
        folder_path=str(folder),
        commit_message="Upload diabetic retinopathy grader trained with dr_hf",
        ignore_patterns=_NEVER_UPLOAD,
    )
    logger.info("Pushed %s to https://huggingface.co/%s", folder, repo_id)
    return str(getattr(commit, "commit_url", commit))
