"""Grad-CAM heatmaps of a grader's decisions, and figures of them.

Maps come from pytorch-grad-cam's `GradCAM`. The grader (a transformers TimmWrapper, possibly
inside a PEFT LoRA model) returns an `ImageClassifierOutput`, so grad-cam sees it through a small
module returning the logits. The layer whose activations are weighted by their gradients is

- for ViTs (RETFound, LoRA-adapted or not): the last block's `norm1`, whose tokens are turned
  into a feature map by dropping the prefix (class, register) tokens and laying the patch tokens
  out on the patch grid, the grad-cam documentation's recipe for vision transformers;
- for CNNs: the last stage timm lists in `feature_info` (`layer4` of a ResNet), or, when the
  input is so small that this stage is a single cell (which would give a constant map), the
  deepest stage still at least 2 x 2.

Gradients reach the target layer from an input that is made to require grad, so they flow
whatever the weights' flags (a LoRA adapter's frozen base, a grader loaded for inference). The
parameters are frozen while the maps are computed, so no weight gradient is built, and their
`requires_grad` flags and the modules' train/eval modes are restored afterwards. The model runs
in eval mode, so the same inputs give the same maps.
"""

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
import torch
from matplotlib.figure import Figure
from torch import nn

from dr_hf.grades import GRADE_NAMES
from dr_hf.models.parts import timm_backbone

if TYPE_CHECKING:  # dr_hf.inference imports the datasets stack, which heatmaps do not need
    from dr_hf.inference.grader import Grader

try:
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.image import show_cam_on_image
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
except ImportError as error:  # pragma: no cover - depends on the environment
    raise ImportError("Heatmaps need pytorch-grad-cam: pip install grad-cam.") from error

# Figure size and resolution are fixed so that every PNG has the same pixel size (900 x 340);
# so are the axes (left, bottom, width, height in figure fractions): no layout pass per figure,
# which would draw it once more than saving does.
FIGSIZE = (9.0, 3.4)
DPI = 100
AXES = {
    "photo": (0.01, 0.04, 0.3, 0.8),
    "overlay": (0.32, 0.04, 0.3, 0.8),
    "bars": (0.79, 0.18, 0.19, 0.64),
}


class _Logits(nn.Module):
    """The grader seen as grad-cam expects a classifier: images in, logits out."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not x.requires_grad:  # gradients flow from the input, whatever the weights' flags
            x = x.detach().requires_grad_(True)
        return self.model(pixel_values=x).logits.float()

    def zero_grad(self, set_to_none: bool = True) -> None:
        """A no-op: grad-cam calls it before each backward pass, but the weights are frozen
        while maps are computed, so there is nothing to clear, and gradients the caller may
        hold in `.grad` are left alone."""


def target_layer(model: nn.Module, input_side: int) -> tuple[str, nn.Module, Callable | None]:
    """(name inside the timm model, module, reshape transform or None) of the layer Grad-CAM
    weights, for a (PEFT-wrapped) grader fed `input_side`-pixel images (see the module doc)."""
    backbone = timm_backbone(model)
    # A plain ViT (patch embedding, blocks, prefix tokens): its features are tokens, not a map.
    if all(hasattr(backbone, a) for a in ("patch_embed", "blocks", "num_prefix_tokens")):
        name = f"blocks.{len(backbone.blocks) - 1}.norm1"
        return name, backbone.get_submodule(name), _token_grid(backbone)
    stages = getattr(backbone, "feature_info", None)
    if not stages:
        raise ValueError(
            f"{type(backbone).__name__} lists no feature_info stages: Grad-CAM needs a timm CNN "
            "or a timm ViT."
        )
    usable = [stage for stage in stages if input_side // stage["reduction"] >= 2]
    name = (usable or stages)[-1]["module"]
    return name, backbone.get_submodule(name), None


def _token_grid(backbone: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """Tokens [N, prefix + patches, C] to a map [N, C, rows, cols] on the patch grid."""
    prefix = backbone.num_prefix_tokens
    rows, cols = backbone.patch_embed.grid_size

    def reshape(tokens: torch.Tensor) -> torch.Tensor:
        patches = tokens[:, prefix:, :]
        return patches.reshape(tokens.size(0), rows, cols, tokens.size(2)).permute(0, 3, 1, 2)

    return reshape


@contextlib.contextmanager
def _frozen(model: nn.Module) -> Iterator[None]:
    """Freeze every parameter for the duration; then restore each parameter's `requires_grad`
    and each module's `training` flag as they were (grad-cam switches the model to eval)."""
    flags = [(parameter, parameter.requires_grad) for parameter in model.parameters()]
    modes = [(module, module.training) for module in model.modules()]
    try:
        for parameter, _ in flags:
            parameter.requires_grad_(False)
        yield
    finally:
        for parameter, flag in flags:
            parameter.requires_grad_(flag)
        for module, training in modes:
            module.training = training


def _cam_and_logits(
    grader: "Grader", pixel_values: torch.Tensor, targets: list[int] | None, batch_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Grad-CAM maps [N, H, W] and the logits [N, grades] of the same forward passes."""
    if targets is not None and len(targets) != len(pixel_values):
        raise ValueError(f"{len(targets)} targets for {len(pixel_values)} images.")
    _, layer, reshape = target_layer(grader.model, min(pixel_values.shape[-2:]))
    maps, logits = [], []
    # Grad-cam needs autograd even when the caller runs under no_grad or inference_mode.
    with torch.inference_mode(False), torch.enable_grad(), _frozen(grader.model):
        cam = GradCAM(_Logits(grader.model), [layer], reshape_transform=reshape)
        try:
            for start in range(0, len(pixel_values), batch_size):
                batch = pixel_values[start : start + batch_size].to(grader.device).clone()
                chosen = None if targets is None else targets[start : start + batch_size]
                wanted = None if chosen is None else [ClassifierOutputTarget(t) for t in chosen]
                maps.append(cam(input_tensor=batch, targets=wanted))
                logits.append(cam.outputs.detach().cpu().numpy())
        finally:
            cam.activations_and_grads.release()  # not `with`: its __exit__ swallows IndexError
    return np.clip(np.concatenate(maps), 0.0, 1.0).astype(np.float32), np.concatenate(logits)


def gradcam(
    grader: "Grader",
    pixel_values: torch.Tensor,
    targets: list[int] | None = None,
    batch_size: int = 16,
) -> np.ndarray:
    """Grad-CAM maps [N, H, W], float32 in [0, 1], at the resolution of `pixel_values`
    (normalised [N, 3, H, W], as the grader's processor makes them), for the grade `targets`
    (default: each image's predicted grade), `batch_size` images per forward/backward pass.

    Each map is min-max scaled on its own by grad-cam, so maps show where, not how strongly;
    a map with no positive evidence for its grade is all zeros.
    """
    return _cam_and_logits(grader, pixel_values, targets, batch_size)[0]


def overlay(image: np.ndarray, heatmap: np.ndarray, alpha: float = 0.4) -> np.ndarray:
    """The RGB uint8 photograph with the jet-coloured `heatmap` blended in at weight `alpha`
    (resized bilinearly to the photograph first when the sizes differ): uint8 (H, W, 3)."""
    height, width = image.shape[:2]
    heatmap = np.asarray(heatmap, np.float32)
    if heatmap.shape != (height, width):
        heatmap = cv2.resize(heatmap, (width, height), interpolation=cv2.INTER_LINEAR)
    photo = np.asarray(image, np.float32) / 255.0
    return show_cam_on_image(photo, np.clip(heatmap, 0, 1), use_rgb=True, image_weight=1 - alpha)


def write_heatmap(
    path: str | Path,
    image: np.ndarray,
    heatmap: np.ndarray,
    grade_names: list[str] = GRADE_NAMES,
    probabilities: np.ndarray | None = None,
    title: str = "",
) -> Path:
    """One PNG: the photograph as the model saw it, the overlay of the heatmap of the predicted
    grade (the most probable one), and the grades' probabilities as labelled bars. The figure
    size and dpi are fixed, so every PNG has the same pixel size."""
    if probabilities is None:
        raise ValueError("write_heatmap needs the grades' probabilities.")
    probabilities = np.asarray(probabilities, np.float64)
    if probabilities.shape != (len(grade_names),):
        raise ValueError(f"{probabilities.shape} probabilities for {len(grade_names)} grades.")
    predicted = int(np.argmax(probabilities))
    figure = Figure(figsize=FIGSIZE)
    photo, cam, bars = (figure.add_axes(AXES[name]) for name in ("photo", "overlay", "bars"))
    photo.imshow(image)
    photo.set_title("Model input", fontsize=9)
    cam.imshow(overlay(image, heatmap))
    cam.set_title(f"Grad-CAM: {predicted} {grade_names[predicted]}", fontsize=9)
    for ax in (photo, cam):
        ax.set_axis_off()
    grades = np.arange(len(grade_names))
    bars.barh(grades, probabilities, color=["C3" if g == predicted else "C0" for g in grades])
    for grade, value in zip(grades, probabilities):
        bars.text(min(value, 0.75) + 0.02, grade, f"{value:.3f}", va="center", fontsize=8)
    bars.set_yticks(grades, [f"{g}: {name}" for g, name in enumerate(grade_names)], fontsize=8)
    bars.invert_yaxis()
    bars.set_xlim(0, 1)
    bars.set_xlabel("Probability", fontsize=8)
    bars.tick_params(axis="x", labelsize=8)
    if title:
        figure.suptitle(title, fontsize=10)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=DPI)
    return path


NO_REGRESSION_FIGURES = (
    "Grad-CAM figures show the map of the most probable grade beside the grade probabilities; a "
    "regression model has no grade probabilities: grade it without --heatmaps."
)


def heatmaps_for(
    grader: "Grader", images: list, out_dir: str | Path, names: list[str], batch_size: int = 16
) -> list[Path]:
    """Write `out_dir/<name>.png` (see `write_heatmap`) for each PIL image or RGB array, with the
    map of its predicted grade; returns the paths in order.

    Each photograph goes through the grader's processor once (`Grader.view`): its uint8 view is
    what the figure shows, and its normalised pixels are what the model grades. Probabilities
    are the softmax of the logits of the Grad-CAM forward passes, so each batch runs the model
    once.
    """
    if len(names) != len(images) or len(set(names)) != len(names):
        raise ValueError(f"{len(images)} images need as many distinct names, got {len(names)}.")
    if grader.head == "regression":
        raise ValueError(NO_REGRESSION_FIGURES)
    out_dir = Path(out_dir)
    paths = []
    for start in range(0, len(images), batch_size):
        views = [grader.view(image) for image in images[start : start + batch_size]]
        pixel_values = torch.stack([values for _, values in views])
        maps, logits = _cam_and_logits(grader, pixel_values, None, batch_size)
        probabilities = torch.softmax(torch.from_numpy(logits), dim=-1).numpy()
        for offset, ((photo, _), heatmap, probs) in enumerate(zip(views, maps, probabilities)):
            name = names[start + offset]
            paths.append(
                write_heatmap(out_dir / f"{name}.png", photo, heatmap, GRADE_NAMES, probs, name)
            )
    return paths


__all__ = [
    "gradcam",
    "heatmaps_for",
    "overlay",
    "target_layer",
    "write_heatmap",
]
