"""The training augmentation applied to uint8 batches on the training device (`--augment_on gpu`).

One random draw, two appliers. The draw is Albumentations' own: `draw_parameters` seeds each
random transform of the training `Compose` exactly as the CPU path does (`transforms.reseed`
with `sample_seed(seed, epoch, image_id)`) and asks it for the decision and parameters it would
use, without touching a pixel. A DataLoader worker does that (microseconds) and ships the
parameters beside the uint8 image; `augment_batch` then applies them to the whole batch on the
device: flips and 90-degree rotations exactly, the Affine through `F.affine_grid` /
`F.grid_sample` with each image's own matrix (bilinear, black border, rounded to integers as
OpenCV's uint8 warp is), brightness/contrast through the same float32 formula and truncation
as Albumentations' lookup table, CoarseDropout's holes exactly, then the normalisation.

The parameters of one image depend on (seed, epoch, image id) alone, so a batch's composition,
the number of workers, the rank and a resume change nothing; every image of a batch has its own.
"""

from collections.abc import Callable, Sequence

import albumentations as A
import numpy as np
import torch
import torch.nn.functional as F

MAX_HOLES = 8  # get_transforms' CoarseDropout draws exactly 8 holes
# Columns of one image's parameter row.
HFLIP, VFLIP, ROT90, AFFINE, MATRIX, BC, ALPHA, BETA, DROPOUT, HOLES = (
    0,
    1,
    2,
    3,
    slice(4, 10),
    10,
    11,
    12,
    13,
    slice(14, 14 + 4 * MAX_HOLES),
)
NUM_PARAMS = 14 + 4 * MAX_HOLES
RANDOM_TRANSFORMS = (
    A.HorizontalFlip,
    A.VerticalFlip,
    A.RandomRotate90,
    A.Affine,
    A.RandomBrightnessContrast,
    A.CoarseDropout,
)
_DETERMINISTIC = (A.Resize, A.Normalize, A.ToTensorV2)


def no_augmentation() -> np.ndarray:
    """The parameter row of an image left as it is."""
    return np.zeros(NUM_PARAMS, np.float64)


def random_children(compose: A.Compose) -> list[tuple[int, type, A.BasicTransform]]:
    """(position, kind, transform) of each random transform of `compose`, found once per
    pipeline; a TypeError for one without a device version."""
    children = []
    for index, transform in enumerate(compose.transforms):
        if isinstance(transform, _DETERMINISTIC):
            continue
        kind = next((k for k in RANDOM_TRANSFORMS if isinstance(transform, k)), None)
        if kind is None:
            raise TypeError(
                f"{type(transform).__name__} has no device implementation: augment_on=gpu "
                "applies HorizontalFlip, VerticalFlip, RandomRotate90, Affine, "
                "RandomBrightnessContrast and CoarseDropout."
            )
        children.append((index, kind, transform))
    return children


def draw_parameters(
    children: list[tuple[int, type, A.BasicTransform]],
    child_seed: Callable[[int], int],
    image: np.ndarray,
) -> np.ndarray:
    """The parameter row the pipeline's `children` (`random_children`) would apply to `image`,
    each seeded with `child_seed(position)` as `transforms.reseed` seeds it.

    Each draws what `BasicTransform.__call__` draws, in the same order and from its own
    generators: `should_apply`, then `get_params`, then the data-dependent ones.
    """
    row = no_augmentation()
    data = {"image": image}
    for index, kind, transform in children:
        transform.set_random_seed(child_seed(index))
        if not transform.should_apply():
            continue
        params = transform.update_transform_params(transform.get_params(), data)
        params.update(transform.get_params_dependent_on_data(params=params, data=data))
        if kind is A.HorizontalFlip:
            row[HFLIP] = 1
        elif kind is A.VerticalFlip:
            row[VFLIP] = 1
        elif kind is A.RandomRotate90:
            row[ROT90] = params["factor"]
        elif kind is A.Affine:
            row[AFFINE] = 1
            row[MATRIX] = np.asarray(params["matrix"], np.float64)[:2].reshape(-1)
        elif kind is A.RandomBrightnessContrast:
            row[BC], row[ALPHA], row[BETA] = 1, params["alpha"], params["beta"]
        else:
            holes = np.asarray(params["holes"], np.float64)[:MAX_HOLES]
            row[DROPOUT] = 1
            row[HOLES][: holes.size] = holes.reshape(-1)
    return row


def _pixel_to_grid(side: int, dtype, device) -> torch.Tensor:
    """Pixel coordinates (centres at integers, OpenCV's convention) to grid_sample's [-1, 1]
    (align_corners=False), as a 3x3 matrix."""
    scale = 2.0 / side
    return torch.tensor(
        [[scale, 0, scale / 2 - 1], [0, scale, scale / 2 - 1], [0, 0, 1]],
        dtype=dtype,
        device=device,
    )


def _warp(images: torch.Tensor, matrices: torch.Tensor) -> torch.Tensor:
    """`cv2.warpAffine(image, matrix)` for each image of a float batch (N, C, S, S): the output
    pixel p takes the input at matrix^-1 p, bilinear, black outside."""
    side = images.shape[-1]
    forward = torch.zeros(len(matrices), 3, 3, dtype=torch.float64, device=images.device)
    forward[:, :2] = matrices.to(torch.float64).view(-1, 2, 3)
    forward[:, 2, 2] = 1
    to_grid = _pixel_to_grid(side, torch.float64, images.device)
    theta = to_grid @ torch.linalg.inv(forward) @ torch.linalg.inv(to_grid)
    grid = F.affine_grid(theta[:, :2].to(images.dtype), list(images.shape), align_corners=False)
    warped = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return warped.round_().clamp_(0, 255)


def _holes_mask(params: torch.Tensor, side: int) -> torch.Tensor:
    """True inside any of each image's CoarseDropout holes, (N, 1, S, S)."""
    holes = params[:, HOLES].view(-1, MAX_HOLES, 4)[:, :, :, None]  # x0, y0, x1, y1
    coords = torch.arange(side, device=params.device, dtype=params.dtype)
    inside_x = (coords >= holes[:, :, 0]) & (coords < holes[:, :, 2])  # (N, holes, S)
    inside_y = (coords >= holes[:, :, 1]) & (coords < holes[:, :, 3])
    return (inside_y[:, :, :, None] & inside_x[:, :, None, :]).any(1, keepdim=True)


def augment_batch(
    pixels: torch.Tensor,
    params: torch.Tensor,
    mean: Sequence[float],
    std: Sequence[float],
) -> torch.Tensor:
    """Augment and normalise a uint8 batch as read, (N, S, S, 3), with its parameter rows
    (N, NUM_PARAMS): float32 (N, 3, S, S), as the CPU pipeline's output, on the batch's device."""
    if pixels.dtype != torch.uint8 or pixels.ndim != 4 or pixels.shape[1] != pixels.shape[2]:
        raise ValueError(
            f"augment_batch takes square uint8 batches (N, S, S, 3); got {pixels.dtype} "
            f"{tuple(pixels.shape)}."
        )
    params = params.to(pixels.device)
    x = pixels.permute(0, 3, 1, 2).float().contiguous()
    flip = params[:, HFLIP].bool()[:, None, None, None]
    x = torch.where(flip, x.flip(-1), x)
    flip = params[:, VFLIP].bool()[:, None, None, None]
    x = torch.where(flip, x.flip(-2), x)
    turns = params[:, ROT90].long()
    for k in (1, 2, 3):
        rows = (turns == k).nonzero().squeeze(1)
        if len(rows):
            x[rows] = torch.rot90(x[rows], k, dims=(-2, -1))
    rows = params[:, AFFINE].nonzero().squeeze(1)
    if len(rows):
        x[rows] = _warp(x[rows], params[rows][:, MATRIX])
    on = params[:, BC].bool()[:, None, None, None]
    alpha = params[:, ALPHA].float()[:, None, None, None]
    beta = params[:, BETA].float()[:, None, None, None]
    x = torch.where(on, (x * alpha + beta).clamp_(0, 255).floor_(), x)
    on = params[:, DROPOUT].bool()[:, None, None, None]
    x = x.masked_fill(on & _holes_mask(params, x.shape[-1]), 0.0)
    mean = torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    std = torch.tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return (x / 255.0 - mean) / std


class DeviceAugmentation:
    """What the Trainer calls on each training batch that carries `augment_params`."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        self.mean, self.std = tuple(mean), tuple(std)

    def __call__(self, pixels: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        return augment_batch(pixels, params, self.mean, self.std)
