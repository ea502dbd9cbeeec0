"""One image file to a uint8 RGB tensor: reading, decoding (Pillow), the size it is stored at.

Its errors are ``ImageError``: one line naming the image, also when a DataLoader worker raised it.
Kept apart from ``ssl_emp.data.folder`` (listing, layout, cache) because the data sets that decode
on access use it too; the imports run one way (datasets, folder -> decode).
"""

from __future__ import annotations

import io
import math
import re
import warnings
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ssl_emp.errors import ConfigError

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage


class ImageError(ConfigError):
    """An image that cannot be read or decoded (bad input, exit 2), said in one line.

    torch re-raises a DataLoader worker's exception as ``type(exc)(text)``, the text being its
    "Caught ... in DataLoader worker process N" header and the worker's whole traceback; built from
    such a text, this keeps only the traceback's last line, the original message.
    """

    def __init__(self, message: str):
        if message.startswith("Caught ") and "\nOriginal Traceback" in message:
            last = message.rstrip().rsplit("\n", 1)[-1]  # "ssl_emp.data.decode.ImageError: <message>"
            message = last.partition(": ")[2] or last
        super().__init__(message)


def read_image(path: str, shorter: int | None = None) -> Tensor:
    """The image file at ``path`` as uint8 RGB [3, H, W]; ImageError naming it if unreadable.
    ``shorter``: as ``decode_image``."""
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as exc:
        raise ImageError(f"cannot read image {path}: {exc.strerror or type(exc).__name__}") from exc
    return decode_image(data, path, shorter)


def decode_image(data: bytes, name: str, shorter: int | None = None) -> Tensor:
    """An encoded image's bytes as uint8 RGB [3, H, W]; ImageError naming ``name`` if undecodable.

    ``shorter``: the shorter side the caller will resize the image to; a JPEG is then decoded at a
    reduced DCT scale that keeps at least that (Pillow's ``draft``: 2-8x less work on large photos).

    Images over Pillow's decompression-bomb limit (``PIL.Image.MAX_IMAGE_PIXELS``, 89,478,485
    pixels) are refused: Pillow would only warn up to twice that and decode them in full.
    """
    # Pillow, not torchvision.io: torchvision 0.29 deprecates its decoders.
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            # convert("RGB") drops a palette's transparency, as meant; Pillow's advice to use RGBA is noise here.
            warnings.filterwarnings("ignore", "Palette images with Transparency", UserWarning)
            with Image.open(io.BytesIO(data)) as img:
                if shorter is not None and img.format == "JPEG":
                    w, h = img.size
                    factor = max(1.0, min(w, h) / shorter)
                    img.draft("RGB", (math.ceil(w / factor), math.ceil(h / factor)))
                array = _rgb_array(img)
    except Image.UnidentifiedImageError as exc:
        raise ImageError(f"cannot decode image {name}: not an image in a known format") from exc
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        pixels = re.search(r"\((\d+) pixels\)", str(exc))
        size = f"{int(pixels[1]):,} pixels" if pixels else "its size"
        raise ImageError(f"cannot decode image {name}: {size} over the limit of {Image.MAX_IMAGE_PIXELS:,} pixels "
                         "(PIL.Image.MAX_IMAGE_PIXELS, against decompression bombs)") from exc
    except (OSError, ValueError) as exc:
        # Pillow names its in-memory buffer ("<_io.BytesIO object at 0x...>"): say nothing of it.
        reason = re.sub(r"\s*<_io\.BytesIO object at 0x[0-9a-f]+>", "", str(exc)).strip() or type(exc).__name__
        raise ImageError(f"cannot decode image {name}: {reason}") from exc
    return torch.from_numpy(array.copy()).permute(2, 0, 1)


def _rgb_array(img: PILImage) -> np.ndarray:
    """uint8 [H, W, 3] of an open Pillow image (a multi-frame one: its first frame).

    ``convert("RGB")`` clips high-bit-depth gray (16-bit "I;16*", 32-bit "I", float "F") to 0..255,
    so a 16-bit gradient would come out as 0 and 255 only: those are scaled to 0..255 instead.
    Integer values within 0..65535 are 16-bit samples; a float image within 0..1 or 0..255 is taken
    at that scale; anything else is stretched from its own minimum to its maximum.
    """
    mode = img.mode
    if mode not in ("I", "F") and not mode.startswith("I;16"):
        return np.asarray(img.convert("RGB"))
    values = np.asarray(img, dtype=np.float64)
    finite = values[np.isfinite(values)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
    values = np.nan_to_num(values, nan=lo, posinf=hi, neginf=lo)
    if mode == "F" and lo >= 0 and hi <= 1:
        values = values * 255.0
    elif mode != "F" and lo >= 0 and hi <= 65535:
        values = values / 257.0  # 65535 -> 255
    elif not (mode == "F" and lo >= 0 and hi <= 255):
        values = (values - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(values)
    gray = np.clip(np.rint(values), 0, 255).astype(np.uint8)
    return np.repeat(gray[..., None], 3, axis=2)


# Images resized per chunk of about this many bytes of float32, so that resizing a whole data set
# (cifar10 to 224 px: 30 GB of floats at once) needs little more than the uint8 result.
_RESIZE_CHUNK_BYTES = 64 * 2**20


def resize_square(images: Tensor, size: int) -> Tensor:
    """uint8 images [N, 3, H, W] resized (bilinear, antialiased) to [N, 3, size, size]; as is if already."""
    if images.shape[-2:] == (size, size):
        return images
    n, c, h, w = images.shape
    out = torch.empty((n, c, size, size), dtype=torch.uint8)
    step = max(1, _RESIZE_CHUNK_BYTES // (4 * c * max(h * w, size * size)))
    for start in range(0, n, step):
        part = F.interpolate(images[start:start + step].float(), size=(size, size), mode="bilinear",
                             antialias=True, align_corners=False)
        out[start:start + step] = part.round_().clamp_(0, 255)
    return out


def stored_size(height: int, width: int, image_size: int, store_size: int | None) -> tuple[int, int]:
    """(H, W) at which an image of ``height`` x ``width`` is stored: an image no larger than
    ``image_size`` either way becomes an ``image_size`` square (as the CIFAR-sized sets always were);
    a larger one keeps its aspect ratio, its shorter side cut to ``store_size`` when that is set
    (FFCV's ``max_resolution``), so that views are cropped from its own pixels."""
    if height <= image_size and width <= image_size:
        return image_size, image_size
    short = min(height, width)
    if store_size is None or short <= store_size:
        return height, width
    # torchvision's Resize(int): the longer side truncated, so a 4:3 image stays as close to 4:3.
    return (store_size, int(store_size * width / height)) if height == short else (int(store_size * height / width), store_size)


def store_image(image: Tensor, image_size: int, store_size: int | None) -> Tensor:
    """uint8 [3, H, W] resized (bilinear, antialiased) to its ``stored_size``; as is if already."""
    size = stored_size(image.shape[-2], image.shape[-1], image_size, store_size)
    if tuple(image.shape[-2:]) == size:
        return image
    out = F.interpolate(image[None].float(), size=size, mode="bilinear", antialias=True, align_corners=False)
    return out.round_().clamp_(0, 255).to(torch.uint8)[0]


def eval_view(image: Tensor, size: int) -> Tensor:
    """torchvision's evaluation transform of uint8 [3, H, W]: ``Resize(size)`` (the shorter side to
    ``size``, the longer truncated, bilinear, antialiased) then ``CenterCrop(size)``; as is if it is
    already a ``size`` square. Keeps the aspect ratio, where resizing to a square would squash it."""
    h, w = image.shape[-2:]
    if (h, w) == (size, size):
        return image
    new = (size, int(size * w / h)) if h <= w else (int(size * h / w), size)
    if new != (h, w):
        image = F.interpolate(image[None].float(), size=new, mode="bilinear", antialias=True,
                              align_corners=False).round_().clamp_(0, 255).to(torch.uint8)[0]
    top, left = int(round((new[0] - size) / 2.0)), int(round((new[1] - size) / 2.0))
    return image[:, top:top + size, left:left + size].contiguous()
