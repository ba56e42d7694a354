"""Exported images upright: the EXIF orientation applied to the pixels and the tag dropped.

Scenes store the image as it came (a phone's portrait JPEG is stored sideways with EXIF
orientation 6), while every label Modomo writes (``width``, ``height``, boxes, masks) is in
the upright image's pixels. Readers disagree on EXIF: Pillow's ``ImageOps.exif_transpose``
and OpenCV's ``imread`` apply it, ``torchvision.datasets.CocoDetection`` and plain
``Image.open`` do not, and would silently pair the sideways pixels with upright labels. So an
export writes upright pixels with no orientation tag (every reader then agrees) and leaves
the stored original untouched.

Only images whose orientation tag says they need it are re-encoded (Pillow, in their own
format; JPEGs at quality 95 with their ICC profile and the rest of their EXIF); all others
are copied byte for byte.
"""

from __future__ import annotations

import io

from PIL import ExifTags, Image, ImageOps

__all__ = ["JPEG_QUALITY", "upright_image"]

JPEG_QUALITY = 95
"""Quality of a re-encoded JPEG (Pillow's scale; libjpeg's 95 keeps photographs visually
lossless at about twice quality 75's size)."""


def upright_image(data: bytes) -> bytes:
    """The image with its EXIF orientation applied and the tag removed, in its own format.

    Args:
        data: encoded image bytes (JPEG, PNG, WebP, TIFF …).

    Returns:
        ``data`` itself when it has no orientation tag or the tag is 1 (or Pillow cannot read
        it: the bytes are the stored image's, written as stored), else the re-encoded
        upright image.
    """
    try:
        with Image.open(io.BytesIO(data)) as image:
            orientation = image.getexif().get(ExifTags.Base.Orientation, 1)
            if orientation in (None, 1) or not isinstance(orientation, int):
                return data
            fmt = image.format or "PNG"
            icc = image.info.get("icc_profile")
            upright = ImageOps.exif_transpose(image)
    except (OSError, ValueError, SyntaxError):
        return data
    if upright is None:
        return data
    exif = upright.getexif()
    exif.pop(ExifTags.Base.Orientation, None)
    options: dict[str, object] = {"exif": exif.tobytes()}
    if icc:
        options["icc_profile"] = icc
    if fmt == "JPEG":
        options["quality"] = JPEG_QUALITY
    out = io.BytesIO()
    upright.save(out, fmt, **options)
    return out.getvalue()
