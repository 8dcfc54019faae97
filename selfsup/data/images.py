"""The one owner of decoding an image file: opening it, and turning it into an 8-bit ``L`` or ``RGB`` image.

Every place that reads an image file goes through :func:`open_image` (the header: size and mode, and
the moment for a JPEG ``draft``) and :func:`to_mode` (the decode itself), or :func:`read_image`, which
does both. Whatever goes wrong with the file (not an image, truncated, corrupt, missing, a decompression
bomb over PIL's ``Image.MAX_IMAGE_PIXELS``) comes out as one :class:`BadImageError` whose message names
the file; callers skip such files (:mod:`selfsup.data.bad_images`).

Images of more than 8 bits are scaled to 8 bits, not clipped: a 16-bit value ``v`` becomes
``round(v / 257)`` (65535 -> 255, 32768 -> 128), where ``Image.convert("L")`` would turn every value
over 255 into white.
"""

from __future__ import annotations

import struct
import sys
import warnings
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image

MAX_BAD_FRACTION = 0.01
"""A run fails when more than this fraction of its images cannot be read (fewer are skipped with a warning)."""

GREY_MODES = frozenset({"1", "L", "LA", "La", "I", "F", "I;16", "I;16B", "I;16L", "I;16N"})
"""PIL modes of single-channel images (with or without alpha); every other mode counts as colour."""

DECODE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,  # UnidentifiedImageError, "image file is truncated", missing or unreadable files
    SyntaxError,  # PIL's "broken PNG file" and other malformed headers
    ValueError,
    EOFError,
    struct.error,
    zlib.error,
    Image.DecompressionBombError,
    Image.DecompressionBombWarning,
)
"""What PIL raises for a file it cannot decode."""

_INT32_MAX = 2**31 - 1


class BadImageError(ValueError):
    """An image file that cannot be decoded. ``path`` and ``reason`` are kept; the message names the file."""

    def __init__(self, path: str | Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = str(path), reason

    def __reduce__(self) -> tuple[type[BadImageError], tuple[str, str]]:  # picklable across DataLoader workers
        return BadImageError, (self.path, self.reason)


def describe(error: BaseException) -> str:
    """A short reason for a decoding error, for the warning that names the file."""
    if isinstance(error, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
        return f"decompression bomb refused ({error}; the limit is PIL.Image.MAX_IMAGE_PIXELS)"
    if isinstance(error, Image.UnidentifiedImageError):
        return "not an image file PIL can identify (wrong extension, or corrupt)"
    if isinstance(error, FileNotFoundError):
        return "the file does not exist (any more)"
    return f"{type(error).__name__}: {error}"


def warn(message: str) -> None:
    """One line on stderr: ``selfsup: warning: <message>``."""
    print(f"selfsup: warning: {message}", file=sys.stderr, flush=True)


def mode_channels(mode: str) -> int:
    """1 for a single-channel PIL mode (``L``, ``I;16`` ...), else 3."""
    return 1 if mode in GREY_MODES else 3


def channels_mode(channels: int) -> str:
    """The PIL mode of ``channels``-channel images: ``L`` or ``RGB``."""
    return "L" if channels == 1 else "RGB"


@contextmanager
def open_image(path: str | Path) -> Iterator[Image.Image]:
    """The opened (not yet decoded) image at ``path``, closed on exit.

    Only the header is read: ``size`` and ``mode`` are known, and a JPEG ``draft`` may still be requested
    before :func:`to_mode` decodes it. A file that cannot be opened, or whose size is over PIL's
    decompression-bomb limit (``Image.MAX_IMAGE_PIXELS``), raises :class:`BadImageError`.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(path)
    except DECODE_ERRORS as err:
        raise BadImageError(path, describe(err)) from err
    with image:
        yield image


def to_eight_bits(image: Image.Image) -> Image.Image:
    """``image`` with more-than-8-bit integer values (``I;16*``, or ``I`` with values over 255) scaled to an
    8-bit ``L`` image in proportion: 16-bit values by 255/65535, larger ones from the int32 range. Other
    images are returned as they are. ``image`` must be loaded."""
    if not (image.mode.startswith("I;16") or image.mode == "I"):
        return image
    values = np.asarray(image).astype(np.int64)
    top = int(values.max()) if values.size else 0
    if image.mode == "I" and top <= 255:
        scaled = values.clip(0, 255)
    elif top <= 65535:
        scaled = (values.clip(0) + 128) // 257
    else:
        scaled = np.rint(values.clip(0) * (255 / _INT32_MAX))
    return Image.fromarray(scaled.astype(np.uint8), "L")


def to_mode(image: Image.Image, mode: str, path: str | Path) -> Image.Image:
    """Decode the opened ``image`` (of file ``path``) and convert it to ``mode`` (``L`` or ``RGB``), high bit
    depths scaled (:func:`to_eight_bits`). A truncated or corrupt file raises :class:`BadImageError`."""
    try:
        image.load()
        return to_eight_bits(image).convert(mode)
    except DECODE_ERRORS as err:
        raise BadImageError(path, describe(err)) from err


def read_image(path: str | Path, mode: str) -> Image.Image:
    """The image file ``path`` decoded to ``mode`` (``L`` or ``RGB``); :class:`BadImageError` if it cannot be."""
    with open_image(path) as image:
        return to_mode(image, mode, path)
