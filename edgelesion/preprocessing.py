"""The model's input contract, declared once: training, export and inference all read it from here."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from PIL import Image

RESIZE_FILTERS = {
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "nearest": Image.Resampling.NEAREST,
}

# the margin of runs and bundles that record no `jpeg_draft_margin`: they decoded to no less than 4 input sides
LEGACY_DRAFT_MARGIN = 4


@dataclass(frozen=True)
class Preprocessing:
    """How raw pixels become model input.

    Decoding and resizing happen outside the model (PIL, in `edgelesion.images`); the scaling
    below is a layer inside the model, so every exported artifact takes raw 0-255 RGB pixels.
    """

    image_size: int = 180  # square side in pixels; images are resized to it, whatever their aspect ratio
    resize_method: str = "bilinear"  # a key of RESIZE_FILTERS
    scale: float = 1.0 / 255.0  # in-model: x * scale + offset
    offset: float = 0.0
    color_order: str = "RGB"
    # a JPEG far larger than the input is decoded reduced in the DCT domain (Pillow's draft mode) to no less than
    # jpeg_draft_margin x image_size per side, then resized. Margin 3 decodes a 4000x3000 photo at 1/4 (1000x750 for
    # 224 px): 7.9x less decode + resize time than in full. On three bundles its float files agree with the full decode
    # as at margin 4's 1/2 (0.993-1.000 at both), its int8 files about as they do at any scale or under +-1 grey level
    # of noise (0.970-1.000; the 20-epoch Lite0's int8.onnx 0.980 against 0.990 at 1/2); margin 2 (1/8) cost that
    # model's float files 0.6 point (docs/decoding.md)
    jpeg_draft: bool = True
    jpeg_draft_margin: int = 3  # input sides of the part resized (the centre crop's, where there is one)
    # the share of each side kept around the image's centre before resizing (1: the whole image). Less of a
    # dermoscope's frame and surround, which differ between clinics; the lesion is usually centred.
    centre_crop: float = 1.0

    def __post_init__(self) -> None:
        if self.resize_method not in RESIZE_FILTERS:
            raise ValueError(f"resize_method {self.resize_method!r} is not one of {sorted(RESIZE_FILTERS)}")
        if self.image_size < 8:
            raise ValueError(f"image_size {self.image_size} is too small: use at least 8 pixels")
        if not 0.2 <= self.centre_crop <= 1.0:
            raise ValueError(f"centre_crop {self.centre_crop} must be between 0.2 and 1 (1: the whole image)")
        if not 1 <= self.jpeg_draft_margin <= 16:
            raise ValueError(f"jpeg_draft_margin {self.jpeg_draft_margin} must be between 1 and 16 input sides")

    @property
    def resize_filter(self) -> Image.Resampling:
        """The PIL filter that `resize_method` names."""
        return RESIZE_FILTERS[self.resize_method]

    @property
    def draft_side(self) -> int | None:
        """The side a large JPEG may be decoded down to (see `jpeg_draft`), or None for a full decode."""
        if not self.jpeg_draft:
            return None
        # the crop is what must keep jpeg_draft_margin input sides; rounded so that 3 * 224 / 0.7 stays 960
        return math.ceil(round(self.jpeg_draft_margin * self.image_size / self.centre_crop, 6))

    @property
    def crop_description(self) -> str:
        """What is resized to the input, in words for model cards and file metadata."""
        if self.centre_crop == 1:
            return "the whole image, resized"
        return f"only the centre {self.centre_crop:.0%} of each side, resized"

    def crop_box(self, size: tuple[int, int]) -> tuple[float, float, float, float]:
        """The (left, top, right, bottom) box, in pixels of an image of `size`, that is resized to the input: fractional,
        as Pillow's `resize(box=...)` takes it, so the crop's edge pixels blend their outside neighbours."""
        width, height = size
        left, top = width * (1 - self.centre_crop) / 2, height * (1 - self.centre_crop) / 2
        return left, top, width - left, height - top

    @property
    def scaled_range(self) -> tuple[float, float]:
        """What pixels 0 and 255 become after the in-model scaling: the range an int8 input must span."""
        return self.offset, 255 * self.scale + self.offset

    @property
    def uint8_quantization(self) -> tuple[float, int]:
        """(scale, zero point) of a uint8 input that holds raw pixels: (p - zero point) * scale = p * scale + offset.

        1/255 and 0 for the seed models' pixels / 255; 1/128 and 127 for EfficientNet-Lite's (p - 127) / 128.
        """
        zero_point = -self.offset / self.scale
        if abs(zero_point - round(zero_point)) > 1e-6 or not 0 <= round(zero_point) <= 255:
            raise ValueError(f"the scaling p * {self.scale} + {self.offset} has no uint8 zero point")
        return self.scale, round(zero_point)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for config files."""
        return asdict(self)
