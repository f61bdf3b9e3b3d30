"""Array data: an institution's examples as one array of inputs and one of labels (images,
signals, or features already in numbers), read from an `.npz`, a folder of images with one
subfolder per class, or returned by the institution's own loader.

Axis 0 indexes examples; axis 1 is the channel (an image's colour, a table's feature).
Federated preprocessing standardises each channel with the mean and standard deviation of all
its values across every institution's training split (image normalisation, as torchvision's
`Normalize` does with fixed numbers), computed from per-institution sums, never from values.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fedsilo.errors import DataError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


@dataclass(frozen=True)
class ArrayData:
    """`x[i]` is example i's input (any shape, channel first), `y[i]` its label (a class
    name or number; a regression target's value). `file`: where it came from, for messages."""

    x: np.ndarray
    y: np.ndarray
    file: str = ""

    def __post_init__(self) -> None:
        if self.x.ndim < 2:
            raise DataError(f"{self.where}: inputs need a channel axis: shape (examples, "
                            f"channels, ...), got {self.x.ndim} axis")
        if len(self.x) != len(self.y):
            raise DataError(f"{self.where}: {len(self.x)} inputs but {len(self.y)} labels")

    def __len__(self) -> int:
        return len(self.y)

    @property
    def where(self) -> str:
        return self.file or "array data"

    @property
    def shape(self) -> tuple[int, ...]:
        """One example's input shape."""
        return tuple(int(d) for d in self.x.shape[1:])

    @property
    def labels(self) -> pd.Series:
        return pd.Series(self.y)

    def take(self, index: np.ndarray) -> ArrayData:
        return ArrayData(self.x[index], self.y[index], self.file)

    @staticmethod
    def concat(parts: Sequence[ArrayData]) -> ArrayData:
        return ArrayData(np.concatenate([p.x for p in parts]),
                         np.concatenate([p.y for p in parts]), "pooled")


def channel_names(shape: Sequence[int]) -> tuple[str, ...]:
    """The names federated preprocessing gives the channels of inputs shaped `shape`."""
    return tuple(f"channel_{c}" for c in range(int(shape[0])))


def read_npz(path: Path) -> ArrayData:
    """Arrays `x` and `y` from an `.npz` (loaded without pickle: object arrays refused).

    Raises:
        DataError: unreadable file, or no `x` / `y` array in it.
    """
    try:
        with np.load(path, allow_pickle=False) as arrays:
            missing = [k for k in ("x", "y") if k not in arrays.files]
            if missing:
                raise DataError(f"{path.name}: no array named {missing} (an .npz for fedsilo "
                                f"holds 'x', the inputs, and 'y', the labels; it has "
                                f"{sorted(arrays.files)[:10]})")
            x, y = np.asarray(arrays["x"]), np.asarray(arrays["y"])
    except DataError:
        raise
    except (OSError, ValueError) as e:  # not an npz, or pickled objects inside
        raise DataError(f"cannot read {path.name} as an .npz of plain arrays "
                        f"({type(e).__name__})") from None
    return ArrayData(_numbers(x, path.name), y, path.name)


def read_image_folder(root: Path) -> ArrayData:
    """Every image under `root/<class>/`, as floats in [0, 1] shaped (channels, height,
    width), labelled with its subfolder's name. Grayscale when every image is; RGB otherwise.

    Raises:
        DataError: no class subfolder, no image, an unreadable image, or images of
            different sizes (the message names counts and sizes, never pixels).
    """
    from PIL import Image, UnidentifiedImageError

    classes = sorted(p for p in root.iterdir() if p.is_dir())
    files = [(f, c.name) for c in classes for f in sorted(c.iterdir())
             if f.suffix.lower() in IMAGE_SUFFIXES]
    if not files:
        raise DataError(f"{root.name}: no images in class subfolders (a folder of images "
                        f"holds one subfolder per class, e.g. {root.name}/cat/1.png)")
    images = []
    for f, _ in files:
        try:
            with Image.open(f) as im:
                images.append(im.copy())
        except (OSError, UnidentifiedImageError):  # its name may be a patient's: logged here
            log.warning("%s: cannot read image %s", root, f)
            raise DataError(f"{root.name}: image {len(images) + 1} of {len(files)} cannot be "
                            f"read (its name is in this institution's log)") from None
    gray = all(im.mode in ("1", "L", *WIDE) for im in images)
    arrays = [_pixels(im, gray) for im in images]
    sizes = sorted({a.shape[:2] for a in arrays})
    if len(sizes) > 1:
        raise DataError(f"{root.name}: images of {len(sizes)} sizes ({sizes[:3]}): resize them "
                        f"to one size first")
    x = np.stack(arrays)
    x = x[:, None] if gray else x.transpose(0, 3, 1, 2)
    return ArrayData(x, np.array([label for _, label in files]), root.name)


WIDE = {"I;16": 65535.0, "I;16B": 65535.0, "I;16L": 65535.0, "I": None, "F": None}


def _pixels(im: Any, gray: bool) -> np.ndarray:
    """An image's pixels as floats in [0, 1]: 8-bit ones over 255, 16-bit ones over 65535,
    32-bit integer and float images over their own largest value (never clipped)."""
    if gray and im.mode in WIDE:
        a = np.asarray(im, dtype=np.float32)
        top = WIDE[im.mode] or float(max(np.abs(a).max(initial=0.0), 1.0))
        return a / np.float32(top)
    return np.asarray(im.convert("L" if gray else "RGB"), dtype=np.float32) / 255.0


def as_source(obj: Any, where: str) -> pd.DataFrame | ArrayData:
    """What a user's loader returned, as a table or array data: a pandas DataFrame, a pair
    `(x, y)` of arrays, or a map-style dataset (`len()` and `[i] -> (x_i, y_i)`, e.g. a
    `torch.utils.data.Dataset`), whose items are stacked into arrays.

    Raises:
        DataError: anything else (its type named).
    """
    if isinstance(obj, pd.DataFrame):
        obj.attrs.setdefault("file", where)
        return obj
    if isinstance(obj, ArrayData):
        return obj
    if isinstance(obj, tuple) and len(obj) == 2:
        return ArrayData(_numbers(_array(obj[0]), where), _array(obj[1]), where)
    if hasattr(obj, "__len__") and hasattr(obj, "__getitem__"):
        items = [obj[i] for i in range(len(obj))]
        if not items or not all(isinstance(it, (tuple, list)) and len(it) == 2
                                for it in items):
            raise DataError(f"{where}: the loader's dataset must yield (input, label) pairs")
        x = np.stack([_array(it[0]) for it in items])
        y = np.array([_array(it[1]).item() for it in items])
        return ArrayData(_numbers(x, where), y, where)
    raise DataError(f"{where}: the loader returned a {type(obj).__name__}; return a pandas "
                    f"DataFrame, a pair (x, y) of arrays, or a dataset of (input, label) pairs")


def _array(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def _numbers(x: np.ndarray, where: str) -> np.ndarray:
    if not np.issubdtype(x.dtype, np.number) and x.dtype != np.bool_:
        raise DataError(f"{where}: inputs must be numbers, not {x.dtype}")
    return x.astype(np.float32, copy=False)
