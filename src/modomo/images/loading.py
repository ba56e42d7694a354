"""Safe image identification and decoding with Pillow.

Everything that arrives here is untrusted bytes (uploads, downloaded URLs). The two entry
points are:

* :func:`probe_image` -- a cheap, header-only check (format, size, frame count) that never
  decodes pixel data, so it is safe to call on anything before committing to a decode.
* :func:`load_image` -- probe, then a full decode of the first frame into a ``(H, W, 3)``
  ``uint8`` RGB array (EXIF orientation applied) plus an optional boolean opacity mask
  (complete RGB and greyscale JPEGs are decoded by OpenCV, the fastest way to an array:
  :func:`_decode_jpeg`).

Every failure is reported as :class:`ImageError` (a :class:`ValueError`) whose message is a
clear, user-facing reason. Pillow's own exceptions never escape.

Decompression bombs: the caller passes ``max_pixels`` and it is checked against the header
dimensions *before* any pixel data is decoded. Pillow's process-global
``Image.MAX_IMAGE_PIXELS`` guard is neither relied upon nor modified: its
``DecompressionBombWarning`` is silenced around our own calls (we apply our own limit), and
its ``DecompressionBombError`` (images over twice that global, ~179 MP by default) is
converted to :class:`ImageError`. Consequently a ``max_pixels`` above Pillow's hard limit is
capped by it unless the application raises ``Image.MAX_IMAGE_PIXELS``. The warning filter is
installed with :class:`warnings.catch_warnings`, which is process-global state; that is fine
for the pipeline's process-per-worker model.

``ImageFile.LOAD_TRUNCATED_IMAGES`` is never touched: truncated files are errors.
"""

from __future__ import annotations

import io
import re
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, replace

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = [
    "SUPPORTED_FORMATS",
    "ImageError",
    "ImageInfo",
    "LoadedImage",
    "load_image",
    "probe_image",
    "sniff_mime",
]

#: Pillow format names accepted by :func:`probe_image` / :func:`load_image`, mapped to the
#: MIME type reported in :attr:`ImageInfo.mime`. MPO (multi-picture JPEG, e.g. from phones
#: and stereo cameras) is a JPEG file with extra frames, so it is reported as image/jpeg.
_MIME_BY_FORMAT: dict[str, str] = {
    "JPEG": "image/jpeg",
    "PNG": "image/png",
    "GIF": "image/gif",
    "WEBP": "image/webp",
    "BMP": "image/bmp",
    "TIFF": "image/tiff",
    "MPO": "image/jpeg",
}

#: Pillow format names this module accepts.
SUPPORTED_FORMATS: frozenset[str] = frozenset(_MIME_BY_FORMAT)

# Only these Pillow plugins are ever asked to parse input (smaller attack surface). MPO files
# are recognised by the JPEG plugin, which returns an MpoImageFile for them.
_OPEN_FORMATS: tuple[str, ...] = ("JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF")
_SUPPORTED_LIST = ", ".join(_OPEN_FORMATS)

# BITMAPINFOHEADER variants (core, v1..v5, OS/2) -- the DIB header size at offset 14.
_BMP_HEADER_SIZES = frozenset({12, 16, 40, 52, 56, 64, 108, 124})


class ImageError(ValueError):
    """An input that is not a usable image; ``str(e)`` is a clear, user-facing reason."""


def pillow_open(fp: io.BytesIO, formats: tuple[str, ...] | list[str] | None = None) -> Image.Image:
    """Pillow's own ``Image.open``, even after ultralytics has been imported.

    Importing ultralytics replaces ``PIL.Image.open`` with a wrapper that, on a file Pillow
    cannot identify, tries to pip-install ``pi-heif`` and re-raises ``No module named
    'pi_heif'``: a non-image must fail with Pillow's reason, and a worker must never
    install packages.
    """
    opener = Image.open
    patches = sys.modules.get("ultralytics.utils.patches")
    if patches is not None and opener is getattr(patches, "image_open", None):
        opener = patches._image_open
    return opener(fp, formats=formats)


@dataclass(frozen=True)
class ImageInfo:
    """What the file header says about an image.

    Attributes:
        format: Pillow format name, one of :data:`SUPPORTED_FORMATS` (e.g. ``"JPEG"``).
        mime: MIME type, e.g. ``"image/jpeg"`` (MPO is reported as ``"image/jpeg"``).
        width: Width in pixels. From :func:`probe_image` this is the stored width (before
            EXIF orientation); in :attr:`LoadedImage.info` it is the upright width,
            i.e. ``rgb.shape[1]`` (times :attr:`LoadedImage.reduction`, rounded up).
        height: Height in pixels, with the same convention as ``width``.
        frames: Number of frames (1 for still images; >1 for animations, multi-page TIFF,
            MPO).
    """

    format: str
    mime: str
    width: int
    height: int
    frames: int


@dataclass(frozen=True)
class LoadedImage:
    """A fully decoded image.

    Attributes:
        rgb: ``(H, W, 3)`` ``uint8`` RGB array of the first frame, upright (EXIF orientation
            applied), C-contiguous and writable.
        alpha: ``(H, W)`` ``bool`` array, ``True`` where the pixel is at least partly opaque
            (alpha > 0); ``None`` when the image has no transparency (no alpha channel or
            transparent colour key, or every pixel has alpha > 0).
        info: Header information; ``info.width``/``info.height`` describe the upright image
            (``rgb.shape[1]``/``rgb.shape[0]`` when ``reduction`` is 1).
        reduction: 1, or 2, 4 or 8 when ``rgb`` is the image decoded at that fraction of its
            size (``load_image(reduced=...)``): ``rgb`` is then ``(ceil(H / reduction),
            ceil(W / reduction), 3)``, its pixel ``(r, c)`` about the mean of the block of
            image pixels ``(r * reduction ..., c * reduction ...)``.
    """

    rgb: np.ndarray
    alpha: np.ndarray | None
    info: ImageInfo
    reduction: int = 1

    @property
    def size(self) -> tuple[int, int]:
        """The upright image's ``(height, width)`` in pixels, whatever its reduction."""
        return self.info.height, self.info.width


def sniff_mime(data: bytes | bytearray | memoryview) -> str | None:
    """Identify a supported image format from its magic number, without Pillow.

    Args:
        data: The file's bytes (only the first 32 are inspected).

    Returns:
        The MIME type (``"image/jpeg"``, ``"image/png"``, ``"image/gif"``, ``"image/webp"``,
        ``"image/bmp"`` or ``"image/tiff"``) or ``None`` when the bytes do not start like
        any supported format. A match says nothing about the rest of the file being valid.
    """
    head = bytes(data[:32])
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if len(head) >= 12 and head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return "image/webp"
    if (
        head.startswith(b"BM")
        and len(head) >= 18
        and int.from_bytes(head[14:18], "little") in _BMP_HEADER_SIZES
    ):
        return "image/bmp"
    if head.startswith((b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")):
        return "image/tiff"
    return None


def probe_image(data: bytes | bytearray | memoryview, *, max_pixels: int) -> ImageInfo:
    """Check that ``data`` is a supported, reasonably sized image, reading only its header.

    No pixel data is decoded, so this is cheap even for decompression bombs.

    Args:
        data: The complete file contents.
        max_pixels: Largest accepted ``width * height``; must be positive.

    Returns:
        The header information; ``width``/``height`` are as stored (before EXIF orientation).

    Raises:
        ImageError: ``"empty file (0 bytes)"``; ``"not an image: ..."`` (HTML, text, unknown
            bytes); ``"unsupported image format: ..."`` (e.g. HEIC, SVG, ICO);
            ``"truncated or corrupt image data: ..."`` (unparseable header);
            ``"image too large: W x H = N pixels exceeds the limit of M (decompression bomb
            guard)"``; ``"image has zero width or height ..."``.
        ValueError: ``max_pixels`` is not positive.
        TypeError: ``data`` is not bytes-like.
    """
    im, info = _open_checked(data, max_pixels)
    im.close()
    return info


def load_image(
    data: bytes | bytearray | memoryview,
    *,
    max_pixels: int,
    device: str | None = None,
    reduced: tuple[int, int] | None = None,
) -> LoadedImage:
    """Decode an image (first frame) into an upright RGB array and an optional opacity mask.

    Conversions: ``L``/``1``/``P``/``YCbCr``/``CMYK`` (via Pillow's ``convert``) become RGB;
    16-bit greyscale (``I;16*``) is scaled from 0-65535 to 0-255 (not clipped); 32-bit
    integer ``I`` data within 0-65535 is scaled the same way, otherwise min-max stretched;
    float ``F`` data within 0-1 is scaled by 255, otherwise min-max stretched. Alpha comes
    from an alpha channel (``RGBA``, ``LA``, ``PA``) or a transparent colour / palette
    entries (``info["transparency"]``). Animated GIF/WebP, MPO and multi-page TIFF yield
    their first frame.

    Args:
        data: The complete file contents.
        max_pixels: Largest accepted ``width * height``; must be positive.
        device: a CUDA torch device (``cuda``, ``cuda:N``) to decode complete JPEGs on with
            nvJPEG (torchvision's ``decode_jpeg``), the pixels then copied to the host; any
            other value, or a failure there, decodes on the CPU.
        reduced: ``(long, short)``: a JPEG decoded on the CPU comes at the smallest of 1/2,
            1/4 and 1/8 of its size whose longer side is still at least ``long`` and its
            shorter at least ``short`` pixels (libjpeg's DCT scaling, which skips most of
            the decoding: a 12-megapixel photo in a third of the time), see
            :attr:`LoadedImage.reduction`; other images, and JPEGs too small to reduce,
            come whole.

    Returns:
        The decoded image; see :class:`LoadedImage` for shapes and dtypes.

    Raises:
        ImageError: Everything :func:`probe_image` raises, plus
            ``"truncated or corrupt image data: ..."`` when decoding fails and
            ``"image too large to decode: out of memory"``.
        ValueError: ``max_pixels`` is not positive.
        TypeError: ``data`` is not bytes-like.
    """
    im, info = _open_checked(data, max_pixels)
    try:
        decoded = _decode_jpeg(data, im, device, reduced)
        if decoded is not None:
            rgb, reduction, (height, width) = decoded
            return LoadedImage(
                rgb=rgb,
                alpha=None,
                info=replace(info, width=width, height=height),
                reduction=reduction,
            )
        with _converting_errors(max_pixels):
            im.load()
            _check_size(im.size, max_pixels)  # a GIF frame may enlarge the canvas
            with suppress(Exception):  # corrupt EXIF: keep the stored orientation
                ImageOps.exif_transpose(im, in_place=True)
            rgb, alpha = _to_arrays(im)
    finally:
        im.close()
    height, width = rgb.shape[:2]
    return LoadedImage(rgb=rgb, alpha=alpha, info=replace(info, width=width, height=height))


# --------------------------------------------------------------------------------------
# internals


def _open_checked(
    data: bytes | bytearray | memoryview, max_pixels: int
) -> tuple[Image.Image, ImageInfo]:
    """Open ``data`` with Pillow (header only) and validate it; the caller closes the image."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise TypeError(f"data must be bytes, not {type(data).__name__}")
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, int) or max_pixels <= 0:
        raise ValueError(f"max_pixels must be a positive int, got {max_pixels!r}")
    if len(data) == 0:
        raise ImageError("empty file (0 bytes)")

    with _converting_errors(max_pixels):
        try:
            im = pillow_open(io.BytesIO(data), formats=_OPEN_FORMATS)
        except UnidentifiedImageError:
            raise ImageError(_describe_unidentified(data)) from None

    try:
        with _converting_errors(max_pixels):
            fmt = im.format or ""
            if fmt not in SUPPORTED_FORMATS:  # defensive: plugins are restricted already
                raise ImageError(
                    f"unsupported image format: {fmt or 'unknown'} (supported: {_SUPPORTED_LIST})"
                )
            _check_size(im.size, max_pixels)
            frames = int(getattr(im, "n_frames", 1) or 1)
    except BaseException:
        im.close()
        raise
    width, height = im.size
    info = ImageInfo(
        format=fmt, mime=_MIME_BY_FORMAT[fmt], width=width, height=height, frames=frames
    )
    return im, info


def _decode_jpeg(
    data: bytes | bytearray | memoryview,
    im: Image.Image,
    device: str | None = None,
    reduced: tuple[int, int] | None = None,
) -> tuple[np.ndarray, int, tuple[int, int]] | None:
    """A complete RGB or greyscale JPEG decoded upright by OpenCV (at a reduced size, see
    :func:`load_image`), or on a CUDA device by nvJPEG; with its reduction and the upright
    ``(height, width)``; None for anything else.

    OpenCV's libjpeg-turbo writes straight into the array it returns (and applies the EXIF
    orientation), where Pillow's RGB goes through two more full-size copies: 12-megapixel
    photos decode in about a third of the time. On a GPU, nvJPEG decodes there and only the
    pixels come back, sparing the host the decoding. Only files that end with the JPEG
    end-of-image marker take these ways, because both decode a truncated file with a grey
    bottom instead of failing; the rest, and any file they refuse or decode to an unexpected
    size, go through Pillow and its error messages.
    """
    if im.format != "JPEG" or im.mode not in ("RGB", "L") or bytes(data[-2:]) != b"\xff\xd9":
        return None
    width, height = im.size
    with suppress(Exception):
        if im.getexif().get(0x0112, 1) in (5, 6, 7, 8):  # rotated a quarter turn
            width, height = height, width
    rgb = None
    reduction = 1
    if device is not None and device.startswith("cuda"):
        with suppress(Exception):  # no nvJPEG, a file it refuses: decode on the CPU
            rgb = _decode_jpeg_torch(data, device)
    if rgb is None:
        import cv2  # here: the API and the CLI never decode, and OpenCV takes a while to import

        if reduced is not None:
            long, short = reduced
            for factor in (8, 4, 2):
                if max(width, height) // factor >= long and min(width, height) // factor >= short:
                    reduction = factor
                    break
        flags = {1: 0, 2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4}.get(
            reduction, cv2.IMREAD_REDUCED_COLOR_8
        )
        # the reduced modes include IMREAD_COLOR (BGR), which excludes IMREAD_COLOR_RGB
        flags = (flags & ~cv2.IMREAD_COLOR) | cv2.IMREAD_COLOR_RGB
        rgb = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    expected = (-(-height // reduction), -(-width // reduction), 3)
    if rgb is None or rgb.shape != expected:
        return None
    return np.ascontiguousarray(rgb), reduction, (height, width)


def _decode_jpeg_torch(data: bytes | bytearray | memoryview, device: str) -> np.ndarray:
    """A JPEG decoded upright by torchvision on ``device`` (nvJPEG on CUDA), as (H, W, 3)
    uint8 RGB on the host."""
    import torch

    with warnings.catch_warnings():
        # torchvision 0.29 deprecates its image codecs for TorchCodec, which has no JPEG
        # decoder on the GPU yet; nvJPEG through torchvision is still the way
        warnings.simplefilter("ignore", DeprecationWarning)
        from torchvision.io import ImageReadMode, decode_jpeg

        encoded = torch.frombuffer(bytearray(data), dtype=torch.uint8)
        decoded = decode_jpeg(
            encoded, mode=ImageReadMode.RGB, device=device, apply_exif_orientation=True
        )
    return decoded.permute(1, 2, 0).contiguous().cpu().numpy()


def _check_size(size: tuple[int, int], max_pixels: int) -> None:
    width, height = size
    if width <= 0 or height <= 0:
        raise ImageError(f"image has zero width or height ({width} x {height})")
    pixels = width * height
    if pixels > max_pixels:
        raise ImageError(
            f"image too large: {width} x {height} = {pixels} pixels exceeds the limit of "
            f"{max_pixels} (decompression bomb guard)"
        )


_BOMB_PIXELS_RE = re.compile(r"\((\d+) pixels\)")


@contextmanager
def _converting_errors(max_pixels: int) -> Iterator[None]:
    """Run Pillow code, turning every failure into :class:`ImageError` (chained)."""
    try:
        with warnings.catch_warnings():
            # We enforce max_pixels ourselves; Pillow's global soft limit is irrelevant.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            yield
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        match = _BOMB_PIXELS_RE.search(str(exc))
        pixels = f"{match.group(1)} pixels" if match else "the image"
        if match and int(match.group(1)) > max_pixels:
            reason = f"{pixels} exceeds the limit of {max_pixels}"
        else:
            reason = f"{pixels} exceeds Pillow's global pixel limit"
        raise ImageError(f"image too large: {reason} (decompression bomb guard)") from exc
    except MemoryError as exc:
        raise ImageError("image too large to decode: out of memory") from exc
    except Exception as exc:  # Pillow raises OSError, SyntaxError, struct.error, ...
        detail = str(exc) or type(exc).__name__
        raise ImageError(f"truncated or corrupt image data: {detail}") from exc


# Other formats we can name, to give a better message than "not an image".
_OTHER_SIGNATURES: tuple[tuple[bytes, int, str], ...] = (
    (b"\x00\x00\x01\x00", 0, "ICO"),
    (b"8BPS", 0, "PSD (Photoshop)"),
    (b"\xff\x0a", 0, "JPEG XL"),
    (b"JXL \r\n\x87\n", 4, "JPEG XL"),
    (b"jP  \r\n\x87\n", 4, "JPEG 2000"),
    (b"\xff\x4f\xff\x51", 0, "JPEG 2000"),
    (b"qoif", 0, "QOI"),
    (b"%!PS-Adobe", 0, "PostScript/EPS"),
)
_HEIF_BRANDS = frozenset({b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1"})


def _describe_unidentified(data: bytes | bytearray | memoryview) -> str:
    """Explain why Pillow could not identify ``data`` (user-facing)."""
    head = bytes(data[:1024])
    mime = sniff_mime(head)
    if mime is not None:
        return (
            f"truncated or corrupt image data: looks like {mime} but Pillow cannot read its "
            f"header (corrupt, or a variant of the format it does not support; {len(data)} bytes)"
        )
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in (b"avif", b"avis"):
            return f"unsupported image format: AVIF (supported: {_SUPPORTED_LIST})"
        if brand in _HEIF_BRANDS:
            return f"unsupported image format: HEIC/HEIF (supported: {_SUPPORTED_LIST})"
        return "not an image: looks like an MP4/QuickTime-family media file"
    for signature, offset, name in _OTHER_SIGNATURES:
        if head[offset : offset + len(signature)] == signature:
            return f"unsupported image format: {name} (supported: {_SUPPORTED_LIST})"
    if head.startswith(b"%PDF"):
        return "not an image: looks like a PDF document"

    text = head.lstrip(b"\xef\xbb\xbf \t\r\n\f").lower()
    if text.startswith((b"<!doctype html", b"<html", b"<head", b"<body")) or b"<html" in text:
        return "not an image: looks like an HTML document (e.g. an error or login page)"
    if b"<svg" in text:
        return f"unsupported image format: SVG (vector graphics; supported: {_SUPPORTED_LIST})"
    if text.startswith(b"<?xml") or text.startswith(b"<"):
        return "not an image: looks like an XML/HTML document"
    if text.startswith((b"{", b"[")):
        return "not an image: looks like JSON"
    if _looks_like_text(head):
        return "not an image: looks like plain text"
    return f"not an image: unrecognised data ({len(data)} bytes starting with {head[:8].hex(' ')})"


def _looks_like_text(head: bytes) -> bool:
    try:
        decoded = head.decode("utf-8")
    except UnicodeDecodeError:
        # A multi-byte character may have been cut at the end of the sample.
        try:
            decoded = head[:-3].decode("utf-8")
        except UnicodeDecodeError:
            return False
    if not decoded:
        return False
    printable = sum(ch.isprintable() or ch in "\t\r\n\f" for ch in decoded)
    return printable / len(decoded) > 0.95


_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})
_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})


def _to_arrays(im: Image.Image) -> tuple[np.ndarray, np.ndarray | None]:
    """Convert a loaded Pillow image to ``((H, W, 3) uint8, (H, W) bool | None)``."""
    mode = im.mode
    alpha: np.ndarray | None = None

    if mode in _SIXTEEN_BIT_MODES or mode in ("I", "F"):
        values = np.asarray(im)
        transparency = im.info.get("transparency")
        if isinstance(transparency, int) and not isinstance(transparency, bool):
            alpha = values != transparency
        grey = _scale_to_uint8(values, mode)
        rgb = np.repeat(grey[:, :, np.newaxis], 3, axis=2)
    else:
        if mode in _ALPHA_MODES or ("transparency" in im.info and mode in ("P", "L", "RGB", "1")):
            im = im.convert("RGBA")
            alpha = np.asarray(im.getchannel("A")) > 0
        rgb = np.asarray(im if im.mode == "RGB" else im.convert("RGB"))

    rgb = np.array(rgb, dtype=np.uint8, order="C", copy=True)
    if rgb.ndim != 3 or rgb.shape[2] != 3:  # pragma: no cover - defensive
        raise ImageError(f"unsupported pixel layout: mode {mode} gave shape {rgb.shape}")
    if alpha is not None:
        alpha = np.ascontiguousarray(alpha, dtype=bool)
        if alpha.all():
            alpha = None
    return rgb, alpha


def _scale_to_uint8(values: np.ndarray, mode: str) -> np.ndarray:
    """Map single-channel high-bit-depth data to ``(H, W) uint8``."""
    if mode in _SIXTEEN_BIT_MODES:
        wide = values.astype(np.uint32)
        return ((wide * 255 + 32767) // 65535).astype(np.uint8)
    if mode == "I":
        wide64 = values.astype(np.int64)
        if wide64.size and wide64.min() >= 0 and wide64.max() <= 65535:
            return ((wide64 * 255 + 32767) // 65535).astype(np.uint8)
        return _stretch(wide64.astype(np.float64))
    floats = np.nan_to_num(values.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    if floats.size and floats.min() >= 0.0 and floats.max() <= 1.0:
        return np.rint(floats * 255.0).astype(np.uint8)
    return _stretch(floats)


def _stretch(values: np.ndarray) -> np.ndarray:
    lo = float(values.min()) if values.size else 0.0
    hi = float(values.max()) if values.size else 0.0
    if hi <= lo:
        return np.zeros(values.shape, dtype=np.uint8)
    return np.rint((values - lo) * (255.0 / (hi - lo))).astype(np.uint8)
