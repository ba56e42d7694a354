"""Perceptual hashes (pHash) of photographs, for near-duplicate detection.

The hash is the imagehash library's ``phash`` with ``hash_size=8``: the image is reduced to
32 x 32 greyscale, a 2-D DCT is taken, and each of the 8 x 8 lowest-frequency coefficients
becomes one bit, set when the coefficient is above their median (the DCT-based perceptual
hash described and benchmarked by C. Zauner, "Implementation and Benchmarking of Perceptual
Image Hash Functions", MSc thesis, Upper Austria University of Applied Sciences, 2010; the
implementation is imagehash's, https://github.com/JohannesBuchner/imagehash). Resizing,
re-encoding, mild crops and brightness changes move few bits, so near-duplicates are pairs
whose hashes are within a small Hamming distance (:mod:`modomo.analysis.dedup`).

Hashes are 16 lowercase hex characters: bit 63 (the first hex digit's high bit) is the DCT
coefficient (0, 0), then row-major, as imagehash's ``str(hash)`` writes them.
"""

from __future__ import annotations

from contextlib import suppress

import imagehash
import numpy as np
from PIL import Image, ImageOps

from modomo.images.loading import _check_size, _converting_errors, _open_checked

__all__ = ["phash_hex", "phash_of_array"]

#: ``Image.draft`` target: JPEGs are decoded with DCT scaling to the smallest size that is
#: still at least this large (the hash itself works on 32 x 32), other formats ignore it.
_DRAFT_SIZE = (256, 256)


def phash_hex(data: bytes | bytearray | memoryview, *, max_pixels: int) -> str:
    """The 64-bit pHash of an image file, upright (EXIF orientation applied).

    The file is opened with the project's guarded Pillow opener (the same format, header and
    size checks as :func:`modomo.images.loading.probe_image`), decoded in greyscale (JPEGs with
    DCT scaling to at least 256 x 256 via ``Image.draft``, which is much faster than a full
    decode), turned upright with ``ImageOps.exif_transpose`` (a corrupt EXIF block is
    ignored) and hashed with ``imagehash.phash(image, hash_size=8)``. The first frame of
    animations and multi-page files is used.

    Args:
        data: The complete file contents.
        max_pixels: Largest accepted ``width * height`` (decompression-bomb guard, checked on
            the header before decoding); must be positive.

    Returns:
        16 lowercase hex characters (64 bits), e.g. ``"c3d1e0f09a8b7c6d"``.

    Raises:
        modomo.images.loading.ImageError: empty, not an image, unsupported format, truncated
            or corrupt data, or too many pixels (the messages of
            :func:`~modomo.images.loading.load_image`).
        ValueError: ``max_pixels`` is not positive.
        TypeError: ``data`` is not bytes-like.
    """
    im, _info = _open_checked(data, max_pixels)
    try:
        with _converting_errors(max_pixels):
            im.draft("L", _DRAFT_SIZE)
            im.load()
            _check_size(im.size, max_pixels)  # a GIF frame may enlarge the canvas
            upright: Image.Image = im
            with suppress(Exception):  # corrupt EXIF: keep the stored orientation
                upright = ImageOps.exif_transpose(im)
            return str(imagehash.phash(upright.convert("L"), hash_size=8))
    finally:
        im.close()


def phash_of_array(rgb: np.ndarray) -> str:
    """The 64-bit pHash of an already decoded RGB image.

    Args:
        rgb: ``(H, W, 3)`` ``uint8`` RGB array (e.g. :attr:`LoadedImage.rgb`), H, W >= 1.

    Returns:
        16 lowercase hex characters, as :func:`phash_hex`. The greyscale conversion is
        Pillow's ``convert("L")``, so a lossless (e.g. PNG) file and its decoded array give
        the same hash; a JPEG may differ by a bit or so, as :func:`phash_hex` takes its
        luminance straight from the decoder.

    Raises:
        ValueError: ``rgb`` is not a non-empty ``(H, W, 3)`` ``uint8`` array.
    """
    if not isinstance(rgb, np.ndarray) or rgb.dtype != np.uint8:
        raise ValueError(f"rgb must be a uint8 numpy array, got {getattr(rgb, 'dtype', rgb)!r}")
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.shape[0] == 0 or rgb.shape[1] == 0:
        raise ValueError(f"rgb must have shape (H, W, 3) with H, W >= 1, got {rgb.shape}")
    image = Image.fromarray(np.ascontiguousarray(rgb))
    return str(imagehash.phash(image.convert("L"), hash_size=8))
