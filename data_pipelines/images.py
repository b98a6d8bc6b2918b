"""Opening an image, from bytes (a shard member) or a file, fully decoded and with a clear error.

Every reader of images in the project goes through :func:`open_image` / :func:`open_rgb`, and turns
:class:`ImageError` into its own kind of problem (a skipped sample, a dataset error, ...).
"""

from __future__ import annotations

import io
import os
import warnings

from PIL import Image

ImageSource = bytes | bytearray | memoryview | str | os.PathLike


class ImageError(ValueError):
    """An image that cannot be read or decoded. ``detail`` is the underlying reason alone."""

    def __init__(self, message: str, detail: str):
        super().__init__(message)
        self.detail = detail


def open_image(source: ImageSource, name: str | None = None) -> Image.Image:
    """The image in ``source`` (bytes, or a file path), decoded now, in its stored mode and format.

    Decoding is forced here, so a broken file fails in this call and not later in a transform.
    Large web images are expected: PIL's decompression-bomb *warning* is silenced (its error, at
    twice the limit, still stops the image). ``name`` says which image in the error message.
    """
    from_bytes = isinstance(source, (bytes, bytearray, memoryview))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            if from_bytes:
                image = Image.open(io.BytesIO(source))
                image.load()
                return image
            with Image.open(source) as image:  # closes the file; the decoded pixels stay
                image.load()
                return image
    except Exception as exn:  # noqa: BLE001 - PIL raises many types for broken files
        what = name or ("image bytes" if from_bytes else os.fspath(source))
        verb = "decode" if from_bytes else "read"
        raise ImageError(f"cannot {verb} image {what}: {exn}", str(exn)) from None


def open_rgb(source: ImageSource, name: str | None = None) -> Image.Image:
    """:func:`open_image`, converted to RGB (what every image encoder takes)."""
    return open_image(source, name).convert("RGB")
