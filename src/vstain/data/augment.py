"""Augmentation pipelines (albumentations), as the reference configured them — minus its bug.

The brightfield stack is the ``image``; the fluorescence target rides as an additional *image*
target, so geometric warps resample it bilinearly like the input (the reference passed it as a
``mask`` and got nearest-neighbour). Only the nucleus mask uses nearest-neighbour.

Each call is seeded explicitly (:func:`apply`), so sample ``i`` of epoch ``e`` gets the same
augmentation whatever the number of data-loader workers — runs are reproducible and resumable.
"""

from __future__ import annotations

from dataclasses import dataclass

import albumentations as A
import cv2
import numpy as np


@dataclass(frozen=True)
class AugmentSettings:
    """What to apply after cropping (all probabilities per sample).

    The defaults are the reference's: flips and 90-degree rotations at p=0.5 for every channel;
    for nuclei additionally a shift (fraction of the crop), scale and rotation at p=1.
    """

    flips: bool = True
    rot90: bool = True
    shift: float = 0.0
    scale: float = 0.0
    rotate: float = 0.0


def build_pipeline(settings: AugmentSettings) -> A.Compose:
    """An albumentations pipeline over ``image`` (H,W,7), ``target`` (H,W,k) and ``mask`` (H,W)."""
    steps: list[A.BasicTransform] = []
    if settings.flips:
        steps += [A.HorizontalFlip(p=0.5), A.VerticalFlip(p=0.5)]
    if settings.rot90:
        steps.append(A.RandomRotate90(p=0.5))
    if settings.shift or settings.scale or settings.rotate:
        steps.append(
            A.Affine(
                translate_percent=(-settings.shift, settings.shift),
                scale=(1.0 - settings.scale, 1.0 + settings.scale),
                rotate=(-settings.rotate, settings.rotate),
                interpolation=cv2.INTER_LINEAR,
                mask_interpolation=cv2.INTER_NEAREST,
                border_mode=cv2.BORDER_REFLECT_101,
                p=1.0,
            )
        )
    return A.Compose(steps, additional_targets={"target": "image"}, seed=0)


def apply(
    pipeline: A.Compose,
    image: np.ndarray,
    target: np.ndarray | None = None,
    mask: np.ndarray | None = None,
    *,
    seed: int,
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Augment one sample, channel-first in and out.

    Parameters
    ----------
    pipeline
        From :func:`build_pipeline`.
    image
        ``(C, H, W)`` float32 brightfield stack.
    target
        ``(K, H, W)`` float32 fluorescence target(s), or None.
    mask
        ``(H, W)`` integer mask, or None.
    seed
        Seed of this sample's random draw.
    """
    pipeline.set_random_seed(seed)
    data = {"image": np.ascontiguousarray(image.transpose(1, 2, 0))}
    if target is not None:
        data["target"] = np.ascontiguousarray(target.transpose(1, 2, 0))
    if mask is not None:
        data["mask"] = np.ascontiguousarray(mask.astype(np.uint8))
    out = pipeline(**data)
    image_out = _channels_first(out["image"], image.shape[0])
    target_out = _channels_first(out["target"], target.shape[0]) if target is not None else None
    mask_out = out["mask"].astype(mask.dtype) if mask is not None else None
    return image_out, target_out, mask_out


def _channels_first(array: np.ndarray, channels: int) -> np.ndarray:
    # cv2 drops a trailing singleton channel axis on some warps; put it back.
    if array.ndim == 2:
        array = array[:, :, None]
    assert array.shape[2] == channels
    return np.ascontiguousarray(array.transpose(2, 0, 1), dtype=np.float32)
