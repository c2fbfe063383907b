"""Images held as rows of uint8 arrays (memory-mapped cache files or arrays in memory), read only when indexed."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np


class ImageRows:
    """A sequence of HxWx3 uint8 images, each a row of one of `arrays`.

    Taking a subset or joining two sequences copies no pixels; indexing with an int gives one image, with a slice or
    an index array a stacked copy of those images only. A memory-mapped array is read page by page as indexed, so a
    dataset far larger than memory can be split, shuffled and batched.
    """

    def __init__(self, arrays: Sequence[np.ndarray], rows: np.ndarray | None = None) -> None:
        if not arrays:
            raise ValueError("ImageRows needs at least one array")
        shapes = {a.shape[1:] for a in arrays}
        if len(shapes) != 1 or any(a.dtype != np.uint8 for a in arrays):
            raise ValueError(f"ImageRows joins uint8 arrays of one image shape, not {sorted(map(str, shapes))}")
        self.arrays = tuple(arrays)
        if rows is None:  # every row of every array, in order
            rows = np.concatenate(
                [np.stack([np.full(len(a), k), np.arange(len(a))], axis=1) for k, a in enumerate(self.arrays)]
            )
        self.rows = np.asarray(rows, dtype=np.int64).reshape(-1, 2)  # (array number, row) of each image

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.rows), *self.arrays[0].shape[1:])

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(np.uint8)

    def __len__(self) -> int:
        return len(self.rows)

    def take(self, indices: np.ndarray | Sequence[int]) -> ImageRows:
        """The images at `indices`, in that order, without reading them."""
        return ImageRows(self.arrays, self.rows[np.asarray(indices, dtype=np.int64)])

    def concat(self, other: ImageRows) -> ImageRows:
        """These images followed by `other`'s, without reading them."""
        shifted = other.rows + np.array([len(self.arrays), 0])
        return ImageRows(self.arrays + other.arrays, np.concatenate([self.rows, shifted]))

    def __getitem__(self, key: int | slice | np.ndarray | Sequence[int]) -> np.ndarray:
        if isinstance(key, (int, np.integer)):
            array, row = self.rows[key]
            return np.asarray(self.arrays[array][row])
        wanted = self.rows[key]
        out = np.empty((len(wanted), *self.shape[1:]), np.uint8)
        for k, array in enumerate(self.arrays):
            where = np.flatnonzero(wanted[:, 0] == k)
            if len(where):
                order = np.argsort(wanted[where, 1], kind="stable")  # ascending rows read a file front to back
                out[where[order]] = array[wanted[where[order], 1]]
        return out

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        images = self[slice(None)]
        return images if dtype is None else images.astype(dtype)

    def astype(self, dtype: Any) -> np.ndarray:
        """Every image read into one array of `dtype` (for sets that fit in memory)."""
        return np.asarray(self, dtype=dtype)

    def batches(self, size: int) -> Iterator[np.ndarray]:
        """The images in order, `size` at a time (the last batch may be smaller)."""
        for start in range(0, len(self), size):
            yield self[start : start + size]


def as_rows(images: np.ndarray | ImageRows) -> ImageRows:
    """`images` as ImageRows (an array in memory is wrapped, not copied)."""
    return images if isinstance(images, ImageRows) else ImageRows([np.asarray(images, dtype=np.uint8)])
