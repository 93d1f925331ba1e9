"""`export_space`: a folder that runs the `dr-hf demo` page as a Hugging Face Space.

The folder holds `app.py` (serves `model/` with `dr_hf.demo.app.serve`, by the grading rule
`dr-hf demo --export-space` was given), `requirements.txt`
(dr_hf pinned to the commit it was exported from, when it runs from a git checkout with a
remote, else its wheel built into the folder; Gradio at the installed version), a copy of the model folder without its training
state, and `README.md` with the Space's front matter. `python app.py` there serves the same page
on 127.0.0.1:7860, or where `GRADIO_SERVER_NAME` / `GRADIO_SERVER_PORT` say (a Space sets them).
"""

import importlib.util
import logging
import shutil
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from transformers.utils import IMAGE_PROCESSOR_NAME

from dr_hf.demo.grading import NOTICE, heatmap_module
from dr_hf.inference.onnx_model import is_onnx_folder

logger = logging.getLogger(__name__)

PACKAGE_DIR = Path(__file__).resolve().parents[1]  # dr_hf/

TRAINING_STATE = (
    "optimizer.pt",
    "scheduler.pt",
    "scaler.pt",
    "rng_state*.pth",
    "trainer_state.json",
    "training_args.bin",
)
NO_GIT = (
    "# dr-hf: not exported from a git checkout with a remote. Install it as it is installed "
    "where this folder was made: `dr-hf @ git+https://<host>/<owner>/<repo>@<commit>`, or copy "
    "a wheel (`pip wheel --no-deps <dr_hf checkout>`) here and list `./dr_hf-<version>-py3-none-any.whl`."
)

APP_TEMPLATE = '''"""Hugging Face Space: the `dr-hf demo` page serving the grader in ./model.

{notice}
"""

from pathlib import Path

from dr_hf.demo.app import serve

HERE = Path(__file__).resolve().parent
MODEL = HERE / "model"
RETFOUND_WEIGHTS = {weights!r}  # base weights of a RETFound adapter, relative to this folder
GRADE_RULE = {grade_rule!r}  # argmax, thresholds, or None: the rule saved with the model
CUT_POINTS = {cut_points!r}  # "A,B,C,D" instead of the saved cut points, or None


def main(block: bool = True):
    """Serve the page on GRADIO_SERVER_NAME:GRADIO_SERVER_PORT (a Space sets them), by default
    127.0.0.1:7860; `block=False` returns the running server (`.url`, `.close()`)."""
    weights = str(HERE / RETFOUND_WEIGHTS) if RETFOUND_WEIGHTS else None
    return serve(MODEL, weights, None, GRADE_RULE, CUT_POINTS, host=None, port=None, block=block)


if __name__ == "__main__":
    main()
'''

README_TEMPLATE = """---
title: {title}
emoji: 👁
colorFrom: red
colorTo: gray
sdk: gradio
sdk_version: {gradio}
python_version: "{python}"
app_file: app.py
pinned: false
---

# {title}

{notice}

A diabetic retinopathy grader trained with dr_hf (model `{model}`), served by `dr-hf demo`: one
photograph (grade, probabilities, referable decision with its operating point, the photograph as
the model saw it) or several (the table and CSV of `dr-hf predict`).

Run it locally with `pip install -r requirements.txt && python app.py` (http://127.0.0.1:7860).
"""


def pip_url(remote: str) -> str | None:
    """A git remote as pip's `git+` URL, credentials dropped; None for local remotes."""
    if "://" not in remote and ":" in remote and "@" in remote.split(":")[0]:
        user_host, path = remote.split(":", 1)  # scp-like git@github.com:owner/repo.git
        return f"git+ssh://{user_host}/{path}"
    parts = urlsplit(remote)
    if parts.scheme not in ("https", "http", "ssh"):
        return None
    host = parts.hostname or ""
    host += f":{parts.port}" if parts.port else ""
    user = "git@" if parts.scheme == "ssh" and parts.username == "git" else ""
    return "git+" + urlunsplit((parts.scheme, user + host, parts.path, "", ""))


def _git(folder: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", "-C", str(folder), *args], capture_output=True, text=True, timeout=20
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def dr_hf_requirement(package_dir: str | Path | None = None) -> str:
    """`dr-hf @ git+<remote>@<commit>` when dr_hf runs from a git checkout with an `origin`
    remote, else a comment saying how to install it."""
    package_dir = Path(package_dir or PACKAGE_DIR).resolve()
    top = _git(package_dir, "rev-parse", "--show-toplevel")
    if not top or (Path(top) / "dr_hf").resolve() != package_dir:  # e.g. site-packages in a repo
        return NO_GIT
    commit, remote = (
        _git(package_dir, "rev-parse", "HEAD"),
        _git(package_dir, "remote", "get-url", "origin"),
    )
    url = pip_url(remote) if remote else None
    if not commit or not url:
        return NO_GIT
    if _git(package_dir, "--no-optional-locks", "status", "--porcelain", "-uno"):
        logger.warning("dr_hf has uncommitted changes: the Space installs commit %s", commit)
    return f"dr-hf @ {url}@{commit}"


def local_wheel(output: Path, package_dir: str | Path | None = None) -> str | None:
    """Build dr_hf's wheel from the source checkout it runs from into `output` and return the
    requirement line that installs it (`./dr_hf-<version>-py3-none-any.whl`); None when dr_hf
    is not installed from a checkout (no pyproject.toml beside the package) or the build fails."""
    root = Path(package_dir or PACKAGE_DIR).resolve().parent
    if not (root / "pyproject.toml").is_file():
        return None
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q"]
    if importlib.util.find_spec("setuptools"):  # the build backend is here: no package index
        command.append("--no-build-isolation")
    try:
        subprocess.run([*command, "-w", str(output), str(root)], check=True, timeout=300)
    except (OSError, subprocess.SubprocessError) as error:
        logger.warning("Could not build dr_hf's wheel for the Space: %s", error)
        return None
    wheels = sorted(output.glob("dr_hf-*.whl"))
    return f"./{wheels[-1].name}" if wheels else None


def requirements(
    package_dir: str | Path | None = None, output: Path | None = None, onnx: bool = False
) -> str:
    """dr_hf pinned to its commit; from a checkout without a remote, its wheel built into
    `output`; Gradio (and grad-cam for the heatmap panel, or onnxruntime for an exported ONNX
    model, which has no heatmaps) at the installed versions."""
    pinned = dr_hf_requirement(package_dir)
    if pinned == NO_GIT and output is not None:
        pinned = local_wheel(output, package_dir) or NO_GIT
    lines = [pinned, f"gradio=={version('gradio')}"]
    if onnx:
        lines.append(f"onnxruntime=={version('onnxruntime')}")
    elif heatmap_module() is not None:
        try:
            lines.append(f"grad-cam=={version('grad-cam')}")
        except PackageNotFoundError:
            pass
    return "\n".join(lines) + "\n"


def copy_model(model: Path, target: Path) -> None:
    """The model folder without its training state; a checkpoint's processor from its run."""
    shutil.copytree(model, target, ignore=shutil.ignore_patterns(*TRAINING_STATE))
    if (
        not (target / IMAGE_PROCESSOR_NAME).exists()
        and (model.parent / IMAGE_PROCESSOR_NAME).exists()
    ):
        for source in [model.parent / IMAGE_PROCESSOR_NAME, *model.parent.glob("*.py")]:
            shutil.copy2(source, target / source.name)


def export_space(
    model: str | Path,
    output: str | Path,
    retfound_weights: str | Path | None = None,
    title: str = "DR grader demo",
    grade_rule: str | None = None,
    cut_points: str | None = None,
) -> Path:
    """Write the Space folder `output` (which must not exist or be empty) and return it; its page
    grades by `grade_rule` / `cut_points` as `dr-hf demo` does (default: the model's saved rule).
    """
    model, output = Path(model), Path(output)
    if not model.is_dir():
        raise FileNotFoundError(f"{model} is not a model folder.")
    if output.exists() and any(output.iterdir()):
        raise FileExistsError(f"{output} is not empty: choose a new folder for the Space.")
    output.mkdir(parents=True, exist_ok=True)
    copy_model(model, output / "model")
    weights = None
    if retfound_weights:
        weights = f"retfound/{Path(retfound_weights).name}"
        (output / "retfound").mkdir()
        shutil.copy2(retfound_weights, output / weights)
    (output / "app.py").write_text(
        APP_TEMPLATE.format(
            notice=NOTICE, weights=weights, grade_rule=grade_rule, cut_points=cut_points
        )
    )
    onnx = is_onnx_folder(model)  # served by onnxruntime, without heatmaps
    (output / "requirements.txt").write_text(requirements(output=output, onnx=onnx))
    (output / "README.md").write_text(
        README_TEMPLATE.format(
            title=title,
            gradio=version("gradio"),
            notice=NOTICE,
            model=model.name,
            python=f"{sys.version_info.major}.{sys.version_info.minor}",
        )
    )
    return output
