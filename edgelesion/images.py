"""Decode one image file into the model's RGB input, or say exactly why it cannot be read."""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from edgelesion.preprocessing import Preprocessing

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


class UnreadableImage(Exception):
    """The file is not an image edgelesion can use; the message is the reason."""


@dataclass(frozen=True)
class DecodedImage:
    """One image file read for training: its content hash and the decoded full-size RGB image."""

    sha256: str
    image: Image.Image


def read_image(path: str | Path) -> DecodedImage:
    """Read and fully decode `path` as RGB, applying its EXIF orientation.

    Raises UnreadableImage for empty, truncated, corrupt or non-image files.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UnreadableImage(f"cannot read file: {exc.strerror or exc}") from exc
    if not data:
        raise UnreadableImage("empty file (0 bytes)")
    return DecodedImage(sha256=hashlib.sha256(data).hexdigest(), image=decode_bytes(data))


def decode_bytes(data: bytes) -> Image.Image:
    """Decode image bytes to an upright RGB PIL image."""
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
        image = ImageOps.exif_transpose(image)
    except UnidentifiedImageError as exc:
        raise UnreadableImage("not a recognised image format") from exc
    except Image.DecompressionBombError as exc:
        raise UnreadableImage(f"image too large to decode safely: {exc}") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise UnreadableImage(f"corrupt or truncated image: {exc}") from exc
    return to_rgb(image)


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any PIL mode (L, LA, P, RGBA, CMYK, I;16, ...) to 8-bit RGB."""
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        array = np.asarray(image, dtype=np.float64)
        peak = array.max() if array.size and array.max() > 0 else 1.0
        image = Image.fromarray((array * (255.0 / peak)).astype(np.uint8), mode="L")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        # Transparent pixels are shown on white, as a viewer would show them.
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return image.convert("RGB")


def to_model_input(image: Image.Image, preprocessing: Preprocessing) -> np.ndarray:
    """Resize an RGB image to the model's input size: an HxWx3 uint8 array."""
    size = (preprocessing.image_size, preprocessing.image_size)
    if image.mode != "RGB":
        image = to_rgb(image)
    if image.size != size:
        image = image.resize(size, preprocessing.resize_filter)
    return np.asarray(image, dtype=np.uint8)
