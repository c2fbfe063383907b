"""Decode one image file into the model's RGB input, or say exactly why it cannot be read."""

from __future__ import annotations

import errno
import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from edgelesion.preprocessing import Preprocessing

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
# Pillow decoders tried, by content, whatever the file is called; never EPS/PS (Pillow hands those to Ghostscript).
# Pillow's JPEG decoder also opens MPO, the multi-picture JPEG many cameras and phones write.
IMAGE_FORMATS = ("JPEG", "PNG", "BMP", "GIF", "TIFF", "WEBP")
READABLE = "JPEG, PNG, BMP, GIF, TIFF or WebP"


class UnreadableImage(Exception):
    """The file is not an image edgelesion can use; the message is the reason."""


@dataclass(frozen=True)
class DecodedImage:
    """One image file read for training: its content hash and the decoded full-size RGB image."""

    sha256: str
    image: Image.Image
    reduced: bool = False  # a large JPEG decoded reduced in the DCT domain (smaller than the file's own pixels)


def read_image(path: str | Path, draft_side: int | None = None) -> DecodedImage:
    """Read and decode `path` as RGB, applying its EXIF orientation; a JPEG at least twice `draft_side` per side
    is decoded reduced in the DCT domain (Pillow's draft mode), to no less than `draft_side`.

    Raises UnreadableImage for empty, truncated, corrupt or non-image files.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UnreadableImage(_read_error(path, exc)) from exc
    if not data:
        raise UnreadableImage("empty file (0 bytes)")
    image, reduced = decode_bytes(data, draft_side)
    return DecodedImage(sha256=hashlib.sha256(data).hexdigest(), image=image, reduced=reduced)


def _read_error(path: Path, exc: OSError) -> str:
    """Why `path` could not be read, in words: a broken or looping link, a folder, or the system's reason."""
    if exc.errno == errno.ELOOP:
        return "a symbolic link loop: the link never reaches a file"
    if path.is_symlink() and exc.errno == errno.ENOENT:
        return f"a broken symbolic link: its target {path.readlink()} does not exist"
    if exc.errno == errno.EISDIR:
        return "a folder, not an image file (links to folders are not followed inside a scanned folder)"
    return f"cannot read file: {exc.strerror or exc}"


def decode_bytes(data: bytes, draft_side: int | None = None) -> tuple[Image.Image, bool]:
    """Decode image bytes (one of IMAGE_FORMATS, recognised by content) to an upright RGB PIL image, a large JPEG
    reduced to no less than `draft_side` per side (see `read_image`); and whether it was reduced."""
    try:
        image = Image.open(io.BytesIO(data), formats=IMAGE_FORMATS)
        stored_size = image.size
        if draft_side and image.format in ("JPEG", "MPO"):
            image.draft(None, (draft_side, draft_side))
        reduced = image.size != stored_size
        image.load()
        ImageOps.exif_transpose(image, in_place=True)  # no copy of an upright image (48 MB for a 4000x3000 photo)
    except UnidentifiedImageError as exc:
        raise UnreadableImage(f"not a {READABLE} image") from exc
    except Image.DecompressionBombError as exc:
        raise UnreadableImage(f"image too large to decode safely: {exc}") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise UnreadableImage(f"corrupt or truncated image: {exc}") from exc
    return to_rgb(image), reduced


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any PIL mode (L, LA, P, RGBA, CMYK, I;16, ...) to 8-bit RGB; an RGB image is returned as it is."""
    if image.mode == "RGB":
        return image
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
    """Resize an RGB image (its centre, where the preprocessing crops) to the model's input size: an HxWx3 uint8
    array."""
    size = (preprocessing.image_size, preprocessing.image_size)
    image = to_rgb(image)
    if image.size != size or preprocessing.centre_crop < 1:
        image = image.resize(size, preprocessing.resize_filter, box=preprocessing.crop_box(image.size))
    return np.asarray(image, dtype=np.uint8)


def small_image_warning(size: tuple[int, int], preprocessing: Preprocessing) -> str | None:
    """A warning when the shorter side of what the model sees (the image, or its centre crop) is under half the
    model's input side (upscaled that far, the model sees blur, and its answer is unreliable); None otherwise."""
    model_side, crop = preprocessing.image_size, preprocessing.centre_crop
    if 2 * min(size) * crop >= model_side:
        return None
    seen = "" if crop == 1 else f" (the model sees the centre {crop:.0%} of each side)"
    return (
        f"only {size[0]}x{size[1]} pixels{seen}, under half the model's {model_side}-pixel input side: "
        "the result is unreliable"
    )
