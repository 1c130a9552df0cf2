"""Decoding stimulus images and masks with Pillow, whatever their mode, and saying why one cannot be used.

Images are read as ``[C, H, W]`` float in [0, 1] (:func:`decode_image`): 8-bit modes (``1``, ``L``, ``P``,
``RGB``, ``CMYK``, ...) are converted to grey or RGB by Pillow, dropping any alpha channel (``LA``, ``RGBA``,
transparent palettes); 16-bit grey (``I;16``) is divided by 65535; 32-bit integer grey (``I``) must lie in
0 … 65535 and is read as 16-bit; float grey (``F``) must lie in [0, 1]. NaN or infinite pixels, values outside
those ranges, undecodable, truncated or decompression-bomb files are problems naming each file. Only the first
frame of an animated or multi-page file is read, and EXIF orientation tags are not applied. Masks are the nonzero
pixels of an image (:func:`read_mask`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from sharedattr.data.archives import ZipMember, ZipReadError, image_source
from sharedattr.runtime.errors import DataError

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

HIGH_DEPTH_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")
"""Pillow modes of one grey channel deeper than 8 bits: scaled to [0, 1] by sharedattr, not clipped by Pillow."""
GREY_MODES = ("1", "L", "LA", *HIGH_DEPTH_MODES)
"""Pillow modes of grey images (``LA``: grey with alpha, which is dropped)."""
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif"}
"""The files a stimulus folder (one sub-folder per category) is read for."""


def decode_image(path: Path | ZipMember, size: tuple[int, int], channels: int) -> np.ndarray:
    """The image at ``path`` as float32 ``[H, W, channels]`` in [0, 1], resized (bilinear) to ``size`` ``(H, W)``.

    Raises what Pillow raises for a file it cannot decode, and ValueError for unusable pixels.
    """
    from PIL import Image

    with Image.open(image_source(path)) as im:
        grey = high_depth_grey(im)
        if grey is None:
            im = im.convert("L" if channels == 1 else "RGB").resize((size[1], size[0]), Image.BILINEAR)
            arr = np.asarray(im, dtype=np.float32) / 255.0
        else:
            resized = Image.fromarray(grey).resize((size[1], size[0]), Image.BILINEAR)
            arr = np.clip(np.asarray(resized, dtype=np.float32), 0.0, 1.0)[..., None]
            arr = np.repeat(arr, channels, axis=2)
    return arr.reshape(size[0], size[1], -1)


def is_grey(path: Path | ZipMember) -> bool:
    """Whether the image at ``path`` is grey (reads its header only); an image that cannot be opened counts as
    colour (decoding reports it)."""
    from PIL import Image

    try:
        with Image.open(image_source(path)) as im:
            return im.mode in GREY_MODES
    except Exception:  # noqa: BLE001 - decoding reports unreadable files with their reason
        return False


def high_depth_grey(im: PILImage) -> np.ndarray | None:
    """The pixels of a 16-bit, 32-bit integer or float grey image as float32 ``[H, W]`` in [0, 1]; None for other modes.

    ``I;16*`` is divided by 65535; ``I`` must lie in 0 … 65535 (16-bit data stored as 32-bit)
    and is divided by 65535; ``F`` must lie in [0, 1]. Raises ValueError for NaN or infinite
    pixels and for values out of range, rather than letting Pillow clip them to 0 … 255.
    """
    if im.mode not in HIGH_DEPTH_MODES:
        return None
    a = np.asarray(im, dtype=np.float64)
    if not np.isfinite(a).all():
        raise ValueError(f"{int((~np.isfinite(a)).sum())} NaN or infinite pixel value(s) (mode {im.mode})")
    low, high = (float(a.min()), float(a.max())) if a.size else (0.0, 0.0)
    if im.mode == "F":
        if low < 0 or high > 1:
            raise ValueError(
                f"float (mode F) pixels range from {low:g} to {high:g}; sharedattr reads float images "
                "as intensities in [0, 1]: rescale them, or save 8- or 16-bit images"
            )
        return a.astype(np.float32)
    if low < 0 or high > 65535:
        raise ValueError(
            f"32-bit integer (mode {im.mode}) pixels range from {low:g} to {high:g}; sharedattr reads "
            "them as 16-bit intensities in 0 ... 65535: rescale them, or save 8- or 16-bit images"
        )
    return (a / 65535.0).astype(np.float32)


def read_mask(path: Path | ZipMember, size: tuple[int, int]) -> Tensor:
    """A mask image → ``[H, W]`` bool (nonzero pixels, nearest resize to ``size``); DataError if unreadable."""
    from PIL import Image

    try:
        with Image.open(image_source(path)) as im:
            if im.mode in HIGH_DEPTH_MODES:  # nonzero before any conversion: Pillow would round 0.4 to 0
                a = np.asarray(im, dtype=np.float64)
                if not np.isfinite(a).all():
                    raise ValueError(f"NaN or infinite pixel values (mode {im.mode})")
                im = Image.fromarray(((a != 0) * 255).astype(np.uint8))
            return torch.from_numpy(np.asarray(im.convert("L").resize((size[1], size[0]), Image.NEAREST)) > 0)
    except Exception as err:  # noqa: BLE001 - Pillow raises many types for corrupt files
        raise DataError("stimulus masks", [failure(None, "mask", path, err)]) from None


def image_problems(sid: str, path: Path | ZipMember) -> list[str]:
    """Why image ``path`` of stimulus ``sid`` cannot be used (empty when it can): decode errors, unusable pixels."""
    from PIL import Image

    try:
        with Image.open(image_source(path)) as im:
            im.load()
            try:
                high_depth_grey(im)  # range and finiteness of 16-bit, 32-bit and float pixels
            except ValueError as err:
                return [f"{sid}: unusable pixels in image {path}: {err}"]
    except Exception as err:  # noqa: BLE001 - Pillow raises many types for corrupt files
        return [failure(sid, "image", path, err)]
    return []


def failure(sid: str | None, what: str, path: Path | ZipMember, err: Exception, verb: str = "decode") -> str:
    """One problem line: stimulus ``sid`` (when given) cannot read or decode its ``what`` (image, mask) at ``path``.
    A :class:`ZipReadError` already names the archive, the member, why and the fix."""
    head = f"{sid}: " if sid is not None else ""
    if isinstance(err, ZipReadError):
        return f"{head}{what} {err}"
    return f"{head}cannot {verb} {what} {path}: {type(err).__name__}: {err}"
