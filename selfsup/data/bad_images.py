"""What happens to image files that cannot be read: each is skipped with one warning that names it, and the
run fails only when more than a fraction of its images (:data:`~selfsup.data.images.MAX_BAD_FRACTION`,
1 % by default) are bad.

* :class:`BadImageLog` counts the bad files of one set of images, warns once per file (from the main
  process) and raises :class:`TooManyBadImagesError` over the fraction;
* :func:`first_readable` is what a DataLoader worker does when it meets a bad file: it reads the next index
  instead (deterministically), so that batches keep their size, and hands the failures back to the main
  process for the log;
* :func:`read_images` reads a list of files, skipping the bad ones (``selfsup embed``).

Images that can be read but are smaller than the views cut from them are upscaled; :class:`SmallImages`
counts them and warns once, with the smallest example.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import TypeVar

import torch
from PIL import Image

from selfsup.data.images import MAX_BAD_FRACTION, BadImageError, read_image, warn

T = TypeVar("T")

Failure = tuple[int, str]
"""An unreadable image: (its index in the dataset, the reason)."""


class TooManyBadImagesError(ValueError):
    """More than the allowed fraction of a dataset's images cannot be read; the message lists some."""


def allowed_bad(total: int, max_fraction: float = MAX_BAD_FRACTION) -> int:
    """How many of ``total`` images may be unreadable before a run fails: ``floor(max_fraction * total)``."""
    return int(math.floor(max_fraction * total + 1e-9))


class BadImageLog:
    """The unreadable files of one set of ``total`` images: one warning per file, an error over the fraction.

    ``what`` names the set in the messages (e.g. ``"images"``, ``"test images"``); ``verbose=False`` keeps
    count without warning (the other ranks of a distributed run)."""

    def __init__(
        self, total: int, max_fraction: float = MAX_BAD_FRACTION, what: str = "images", verbose: bool = True
    ) -> None:
        self.total, self.max_fraction, self.what, self.verbose = total, max_fraction, what, verbose
        self.bad: dict[str, str] = {}
        self.indices: set[int] = set()
        """The dataset indices of the bad files added with one (:meth:`add_failures`)."""

    def __len__(self) -> int:
        return len(self.bad)

    def add(self, path: str | Path, reason: str, check: bool = True) -> None:
        """Record the unreadable file ``path`` (a warning the first time), then :meth:`check` unless told not to."""
        key = str(path)
        if key in self.bad:
            return
        self.bad[key] = reason
        if self.verbose:
            warn(f"skipping an unreadable image: {key}: {reason}")
        if check:
            self.check()

    def add_error(self, error: BadImageError) -> None:
        """:meth:`add` for a caught :class:`BadImageError`."""
        self.add(error.path, error.reason)

    def add_failures(self, failures: Sequence[Failure], files: Sequence[str | Path]) -> None:
        """:meth:`add` for the ``(index, reason)`` failures that DataLoader workers report (index into ``files``)."""
        for index, reason in failures:
            self.indices.add(index)
            self.add(files[index], reason)

    def check(self) -> None:
        """Raise :class:`TooManyBadImagesError` when more than ``max_fraction`` of the images are bad."""
        if len(self.bad) <= allowed_bad(self.total, self.max_fraction):
            return
        shown = list(self.bad.items())[:5]
        more = len(self.bad) - len(shown)
        raise TooManyBadImagesError(
            f"{len(self.bad)} of {self.total} {self.what} ({100 * len(self.bad) / max(1, self.total):.2g} %) "
            f"cannot be read, more than the {100 * self.max_fraction:g} % that are skipped "
            f"(max_bad_fraction): repair or remove them.\n"
            + "".join(f"  {path}: {reason}\n" for path, reason in shown)
            + (f"  ... and {more} more\n" if more else "")
        )

    def check_replaced(self, index: torch.Tensor) -> None:
        """After a batch's failures were added: an index of -1 (a worker found nothing readable, see
        :func:`first_readable`) has failed the run already, unless the allowed fraction let it through: then
        fail here."""
        if bool((index < 0).any()):
            raise TooManyBadImagesError(
                f"no readable image was found to replace an unreadable one ({len(self)} of {self.total} "
                f"{self.what} cannot be read so far, see the warnings above)"
            )


class SmallImages:
    """Images whose shorter side is under ``view_size`` (they are upscaled into flat views): counted, reported
    in one warning with the smallest example."""

    def __init__(self, view_size: int) -> None:
        self.view_size, self.count, self.seen = view_size, 0, 0
        self.smallest: tuple[str, int, int] | None = None

    def add(self, path: str | Path, width: int, height: int) -> None:
        """Record one image of ``width`` x ``height`` px."""
        self.seen += 1
        if min(width, height) >= self.view_size:
            return
        self.count += 1
        if self.smallest is None or min(width, height) < min(self.smallest[1:]):
            self.smallest = (str(path), width, height)

    def message(self, of: str = "images") -> str | None:
        """The warning (None when no image is small)."""
        if not self.count or self.smallest is None:
            return None
        path, width, height = self.smallest
        return (
            f"{self.count} of {self.seen} {of} are smaller than the {self.view_size} px views and are upscaled "
            f"(the smallest: {path}, {width}x{height} px)"
        )

    def warn(self, of: str = "images") -> None:
        """Print :meth:`message`, if any."""
        text = self.message(of)
        if text:
            warn(text)


def first_readable(
    index: int, count: int, read: Callable[[int], T], known_bad: Collection[int] = (), max_failures: int = 0
) -> tuple[T | None, int, list[Failure]]:
    """``read(index)``, or when that raises :class:`BadImageError`, ``read`` of the next index (wrapping
    around ``count``) that is not in ``known_bad`` and can be read: (the result, the index read, the
    failures met on the way). The replacement depends only on the files, so every run picks the same one.

    After more than ``max_failures`` new failures in a row it gives up: (None, -1, the failures). Added to
    a :class:`BadImageLog` that allows ``max_failures``, those failures fail the run with a clear message,
    which is why a DataLoader worker returns them instead of raising."""
    failures: list[Failure] = []
    candidate = index
    for _ in range(count):
        if candidate not in known_bad:
            try:
                return read(candidate), candidate, failures
            except BadImageError as err:
                failures.append((candidate, err.reason))
                if len(failures) > max_failures:
                    break
        candidate = (candidate + 1) % count
    return None, -1, failures


def read_images(paths: Sequence[str | Path], mode: str, log: BadImageLog) -> tuple[list[Image.Image], list[str | Path]]:
    """The images of ``paths`` decoded to ``mode``, skipping (and logging in ``log``) the unreadable ones:
    (the images, their paths)."""
    images: list[Image.Image] = []
    kept: list[str | Path] = []
    for path in paths:
        try:
            images.append(read_image(path, mode))
        except BadImageError as err:
            log.add_error(err)
            continue
        kept.append(path)
    return images, kept
