"""The model's input contract, declared once: training, export and inference all read it from here."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from PIL import Image

RESIZE_FILTERS = {
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "nearest": Image.Resampling.NEAREST,
}


@dataclass(frozen=True)
class Preprocessing:
    """How raw pixels become model input.

    Decoding and resizing happen outside the model (PIL, in `edgelesion.images`); the scaling
    below is a layer inside the model, so every exported artifact takes raw 0-255 RGB pixels.
    """

    image_size: int = 180  # square side in pixels; images are resized to it without cropping
    resize_method: str = "bilinear"  # a key of RESIZE_FILTERS
    scale: float = 1.0 / 255.0  # in-model: x * scale + offset
    offset: float = 0.0
    color_order: str = "RGB"

    def __post_init__(self) -> None:
        if self.resize_method not in RESIZE_FILTERS:
            raise ValueError(f"resize_method {self.resize_method!r} is not one of {sorted(RESIZE_FILTERS)}")
        if self.image_size < 8:
            raise ValueError(f"image_size {self.image_size} is too small: use at least 8 pixels")

    @property
    def resize_filter(self) -> Image.Resampling:
        """The PIL filter that `resize_method` names."""
        return RESIZE_FILTERS[self.resize_method]

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for config files."""
        return asdict(self)
