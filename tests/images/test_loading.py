"""Tests for modomo.images.loading; every image is built here with Pillow/numpy."""

from __future__ import annotations

import io
import struct
import time
import tracemalloc
import zlib

import numpy as np
import pytest
from PIL import Image, ImageFile, ImageOps

from modomo.images.loading import (
    SUPPORTED_FORMATS,
    ImageError,
    ImageInfo,
    _decode_jpeg_torch,
    load_image,
    probe_image,
    sniff_mime,
)

LIMIT = 10_000_000


def encode(im: Image.Image, fmt: str, **params: object) -> bytes:
    buffer = io.BytesIO()
    im.save(buffer, fmt, **params)
    return buffer.getvalue()


def blocks_rgb(height: int = 32, width: int = 48) -> np.ndarray:
    """A few flat colour blocks: survives GIF palettes exactly and JPEG nearly."""
    rgb = np.zeros((height, width, 3), np.uint8)
    rgb[: height // 2, : width // 2] = (220, 40, 30)
    rgb[: height // 2, width // 2 :] = (30, 200, 60)
    rgb[height // 2 :, : width // 2] = (20, 40, 210)
    rgb[height // 2 :, width // 2 :] = (250, 250, 250)
    return rgb


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return (
        struct.pack(">I", len(payload))
        + kind
        + payload
        + struct.pack(">I", zlib.crc32(kind + payload))
    )


def png_claiming(width: int, height: int) -> bytes:
    """A tiny greyscale PNG whose header claims width x height (data for one row only)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * (width + 1))
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", idat)
        + png_chunk(b"IEND", b"")
    )


# --------------------------------------------------------------------------------------
# round trips


@pytest.mark.parametrize(
    ("fmt", "params", "mime", "tolerance"),
    [
        ("JPEG", {"quality": 95}, "image/jpeg", 4.0),  # lossy: mean error stays small
        ("PNG", {}, "image/png", 0),  # lossless
        ("GIF", {}, "image/gif", 0),  # 4 colours fit the palette exactly
        ("WEBP", {"lossless": True}, "image/webp", 0),  # lossless WebP
        ("WEBP", {"quality": 90}, "image/webp", 6.0),  # lossy WebP
        ("BMP", {}, "image/bmp", 0),  # uncompressed
        ("TIFF", {}, "image/tiff", 0),  # uncompressed
        ("TIFF", {"compression": "tiff_deflate"}, "image/tiff", 0),  # compressed TIFF
    ],
)
def test_round_trip(fmt: str, params: dict[str, object], mime: str, tolerance: float) -> None:
    original = blocks_rgb()
    data = encode(Image.fromarray(original), fmt, **params)

    loaded = load_image(data, max_pixels=LIMIT)

    assert loaded.info == ImageInfo(format=fmt, mime=mime, width=48, height=32, frames=1)
    assert probe_image(data, max_pixels=LIMIT) == loaded.info
    assert sniff_mime(data) == mime
    assert loaded.rgb.shape == (32, 48, 3)
    assert loaded.rgb.dtype == np.uint8
    assert loaded.rgb.flags.c_contiguous and loaded.rgb.flags.writeable
    assert loaded.alpha is None
    mean_error = np.abs(loaded.rgb.astype(int) - original.astype(int)).mean()
    assert mean_error <= tolerance


def test_supported_formats() -> None:
    assert {"JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF", "MPO"} == SUPPORTED_FORMATS


def test_mpo_is_reported_as_jpeg_with_frames() -> None:
    left = Image.fromarray(blocks_rgb())
    right = Image.new("RGB", left.size, (0, 0, 0))
    data = encode(left, "MPO", save_all=True, append_images=[right])

    loaded = load_image(data, max_pixels=LIMIT)

    assert (loaded.info.format, loaded.info.mime, loaded.info.frames) == ("MPO", "image/jpeg", 2)
    assert np.abs(loaded.rgb.astype(int) - blocks_rgb().astype(int)).mean() < 4  # frame 0


# --------------------------------------------------------------------------------------
# corrupt and non-image input


@pytest.mark.parametrize(
    ("fmt", "keep"),
    [
        ("JPEG", 0.5),  # cut inside the entropy-coded data
        ("JPEG", 0.05),  # cut inside the headers
        ("PNG", 0.5),  # cut inside IDAT
        ("PNG", 0.02),  # cut inside IHDR
    ],
)
def test_truncated_image_is_rejected(fmt: str, keep: float) -> None:
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    data = encode(Image.fromarray(noise), fmt)
    cut = data[: max(1, int(len(data) * keep))]

    with pytest.raises(ImageError, match=r"^truncated or corrupt image data: "):
        load_image(cut, max_pixels=LIMIT)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False  # never switched on globally


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", r"^empty file \(0 bytes\)$"),  # 0-byte upload
        (b"<!DOCTYPE html><html><body>Login</body></html>", r"^not an image: .*HTML"),  # page
        (b"  <html><head></head></html>", r"^not an image: .*HTML"),  # HTML, leading space
        (b"just some words\nand a second line\n", r"^not an image: looks like plain text"),
        (b'{"error": "not found"}', r"^not an image: looks like JSON"),  # API error body
        (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n", r"^not an image: looks like a PDF"),  # PDF
        (b"<svg xmlns='http://www.w3.org/2000/svg'/>", r"^unsupported image format: SVG"),
        (b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00", r"^unsupported image format: HEIC"),
        (b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00", r"^unsupported image format: AVIF"),
        (b"\x00\x00\x01\x00\x01\x00\x10\x10", r"^unsupported image format: ICO"),  # favicon
        (b"8BPS\x00\x01" + b"\x00" * 20, r"^unsupported image format: PSD"),  # Photoshop
        (b"\xff\xd8\xff", r"^truncated or corrupt image data: "),  # bare JPEG magic
    ],
)
def test_non_images_are_rejected_with_a_reason(data: bytes, message: str) -> None:
    with pytest.raises(ImageError, match=message):
        probe_image(data, max_pixels=LIMIT)
    with pytest.raises(ImageError, match=message):
        load_image(data, max_pixels=LIMIT)


def test_random_bytes_are_not_an_image() -> None:
    data = np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes()
    data = b"\x01\x02" + data  # make sure no magic number matches by chance
    with pytest.raises(ImageError, match=r"^not an image: unrecognised data \(4098 bytes"):
        load_image(data, max_pixels=LIMIT)


def test_image_error_is_a_value_error_and_bad_arguments_raise() -> None:
    assert issubclass(ImageError, ValueError)
    png = encode(Image.new("RGB", (2, 2)), "PNG")
    with pytest.raises(ValueError, match="max_pixels"):
        load_image(png, max_pixels=0)
    with pytest.raises(TypeError):
        load_image("not bytes", max_pixels=LIMIT)  # type: ignore[arg-type]
    assert load_image(bytearray(png), max_pixels=LIMIT).rgb.shape == (2, 2, 3)
    assert load_image(memoryview(png), max_pixels=LIMIT).rgb.shape == (2, 2, 3)


# --------------------------------------------------------------------------------------
# size limits / decompression bombs


@pytest.mark.parametrize(
    ("width", "height", "limit", "message"),
    [
        # 1.6 G pixels: also over Pillow's own hard limit; still our message and limit
        (40000, 40000, 50_000_000, r"^image too large: 1600000000 pixels exceeds the limit of "
         r"50000000 \(decompression bomb guard\)$"),
        # 100 M pixels: over Pillow's soft (warning) limit, caught by our check
        (10000, 10000, 50_000_000, r"^image too large: 10000 x 10000 = 100000000 pixels "
         r"exceeds the limit of 50000000 \(decompression bomb guard\)$"),
        # a modest image with a small limit
        (3000, 2000, 5_999_999, r"^image too large: 3000 x 2000 = 6000000 pixels exceeds "
         r"the limit of 5999999 \(decompression bomb guard\)$"),
    ],
)  # fmt: skip
def test_png_bomb_is_refused_quickly_without_allocating(
    width: int, height: int, limit: int, message: str
) -> None:
    data = png_claiming(width, height)
    assert len(data) < 1000

    tracemalloc.start()
    started = time.perf_counter()
    try:
        with pytest.raises(ImageError, match=message):
            probe_image(data, max_pixels=limit)
        with pytest.raises(ImageError, match=message):
            load_image(data, max_pixels=limit)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - started < 1.0
    assert peak < 20_000_000  # far below width * height bytes


def test_probe_of_large_header_within_limit_neither_decodes_nor_warns() -> None:
    # 100 M pixels is above Pillow's global soft limit, which must not apply (warnings are
    # errors in this test suite) when the caller's limit allows it.
    info = probe_image(png_claiming(10000, 10000), max_pixels=150_000_000)
    assert info == ImageInfo(format="PNG", mime="image/png", width=10000, height=10000, frames=1)


def test_limit_is_inclusive() -> None:
    data = encode(Image.new("RGB", (200, 100), (1, 2, 3)), "PNG")
    assert load_image(data, max_pixels=20_000).rgb.shape == (100, 200, 3)
    with pytest.raises(ImageError, match="20000 pixels exceeds the limit of 19999"):
        load_image(data, max_pixels=19_999)


@pytest.mark.parametrize(
    ("width", "height"),
    [
        (1, 1),  # smallest possible image
        (30000, 10),  # extreme panorama strip
        (10, 30000),  # extreme vertical strip
    ],
)
def test_extreme_shapes(width: int, height: int) -> None:
    data = encode(Image.new("RGB", (width, height), (9, 8, 7)), "PNG")
    loaded = load_image(data, max_pixels=LIMIT)
    assert loaded.rgb.shape == (height, width, 3)
    assert (loaded.rgb == (9, 8, 7)).all()


# --------------------------------------------------------------------------------------
# frames, orientation, colour modes


@pytest.mark.parametrize(
    ("fmt", "params"),
    [
        ("GIF", {"duration": 100, "loop": 0}),  # animated GIF
        ("WEBP", {"duration": 100, "lossless": True}),  # animated WebP
        ("TIFF", {}),  # multi-page TIFF
    ],
)
def test_animation_yields_first_frame(fmt: str, params: dict[str, object]) -> None:
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]
    frames = [Image.new("RGB", (16, 12), colour) for colour in colours]
    data = encode(frames[0], fmt, save_all=True, append_images=frames[1:], **params)

    loaded = load_image(data, max_pixels=LIMIT)

    assert loaded.info.frames == 3
    assert loaded.rgb.shape == (12, 16, 3)
    assert (loaded.rgb == (255, 0, 0)).all()


def test_exif_orientation_6_is_applied() -> None:
    stored = np.zeros((40, 80, 3), np.uint8)
    stored[:, :40] = (255, 0, 0)  # left half red
    stored[:, 40:] = (0, 0, 255)  # right half blue
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    data = encode(Image.fromarray(stored), "JPEG", quality=95, exif=exif.tobytes())

    assert probe_image(data, max_pixels=LIMIT).width == 80  # as stored
    loaded = load_image(data, max_pixels=LIMIT)

    assert loaded.rgb.shape == (80, 40, 3)  # upright: width and height swapped
    assert (loaded.info.width, loaded.info.height) == (40, 80)
    top, bottom = loaded.rgb[:35].reshape(-1, 3).mean(0), loaded.rgb[45:].reshape(-1, 3).mean(0)
    assert top[0] > 200 and top[2] < 50  # the left edge became the top edge: red
    assert bottom[2] > 200 and bottom[0] < 50


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("mode", ["RGB", "L"])
def test_jpegs_decode_as_pillow_decodes_them_in_every_orientation(
    orientation: int, mode: str
) -> None:
    # complete JPEGs go through OpenCV (faster): the same upright pixels as Pillow's
    rng = np.random.default_rng(orientation)
    stored = Image.fromarray(rng.integers(0, 255, (37, 61, 3), dtype=np.uint8)).convert(mode)
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = encode(stored, "JPEG", quality=90, exif=exif.tobytes())
    loaded = load_image(data, max_pixels=LIMIT)
    with Image.open(io.BytesIO(data)) as im:
        expected = np.asarray(ImageOps.exif_transpose(im).convert("RGB"), dtype=np.int16)
    assert loaded.rgb.shape == expected.shape
    assert (loaded.info.width, loaded.info.height) == (expected.shape[1], expected.shape[0])
    assert np.abs(loaded.rgb.astype(np.int16) - expected).max() <= 2
    assert loaded.rgb.flags.c_contiguous and loaded.rgb.flags.writeable and loaded.alpha is None
    # the way a CUDA device decodes (torchvision's decode_jpeg), here on the CPU
    on_device = _decode_jpeg_torch(data, "cpu")
    assert np.abs(on_device.astype(np.int16) - expected).max() <= 2


def test_cmyk_jpeg_is_converted_to_close_rgb() -> None:
    original = blocks_rgb()
    cmyk = Image.fromarray(original).convert("CMYK")
    data = encode(cmyk, "JPEG", quality=95)
    assert Image.open(io.BytesIO(data)).mode == "CMYK"

    loaded = load_image(data, max_pixels=LIMIT)

    assert loaded.rgb.shape == original.shape
    assert np.abs(loaded.rgb.astype(int) - original.astype(int)).mean() < 6


def test_sixteen_bit_png_is_scaled_not_clipped() -> None:
    values = np.array([[0, 257, 32768, 65535], [1000, 20000, 50000, 65000]], np.uint16)
    data = encode(Image.fromarray(values), "PNG")
    assert Image.open(io.BytesIO(data)).mode == "I;16"

    loaded = load_image(data, max_pixels=LIMIT)

    expected = np.rint(values / 257.0).astype(np.uint8)
    assert loaded.rgb.dtype == np.uint8
    assert (loaded.rgb == expected[:, :, None]).all()


@pytest.mark.parametrize(
    ("image", "fmt", "expected"),
    [
        # greyscale: copied to all three channels
        (Image.new("L", (3, 2), 77), "PNG", (77, 77, 77)),
        # bilevel: 1 -> white
        (Image.new("1", (3, 2), 1), "PNG", (255, 255, 255)),
        # YCbCr JPEG: decoded to RGB
        (Image.new("RGB", (8, 8), (10, 200, 30)).convert("YCbCr"), "JPEG", (10, 200, 30)),
        # 32-bit float TIFF in 0..1: scaled by 255
        (Image.fromarray(np.full((2, 3), 0.5, np.float32)), "TIFF", (128, 128, 128)),
        # 32-bit integer TIFF in 0..65535: 16-bit scale
        (Image.fromarray(np.full((2, 3), 65535, np.int32)), "TIFF", (255, 255, 255)),
    ],
)
def test_modes_convert_to_rgb(image: Image.Image, fmt: str, expected: tuple[int, int, int]) -> None:
    loaded = load_image(encode(image, fmt), max_pixels=LIMIT)
    assert loaded.rgb.shape == (image.height, image.width, 3)
    assert np.abs(loaded.rgb.astype(int) - np.array(expected)).max() <= 3
    assert loaded.alpha is None


def test_out_of_range_integer_and_float_data_is_stretched() -> None:
    ints = Image.fromarray(np.array([[-5, 0, 100000]], np.int32))
    assert load_image(encode(ints, "TIFF"), max_pixels=LIMIT).rgb[0, :, 0].tolist() == [0, 0, 255]
    floats = Image.fromarray(np.array([[-1.0, 0.0, 3.0]], np.float32))
    assert load_image(encode(floats, "TIFF"), max_pixels=LIMIT).rgb[0, :, 0].tolist() == [
        0,
        64,
        255,
    ]


def test_rgba_alpha_mask() -> None:
    rgba = np.zeros((4, 5, 4), np.uint8)
    rgba[..., :3] = (10, 20, 30)
    rgba[..., 3] = 255
    rgba[0, 0, 3] = 0  # fully transparent
    rgba[1, 2, 3] = 1  # barely opaque still counts as opaque
    loaded = load_image(encode(Image.fromarray(rgba), "PNG"), max_pixels=LIMIT)

    expected = np.ones((4, 5), bool)
    expected[0, 0] = False
    assert loaded.alpha is not None
    assert loaded.alpha.dtype == bool and loaded.alpha.shape == (4, 5)
    assert (loaded.alpha == expected).all()
    assert (loaded.rgb == (10, 20, 30)).all()


@pytest.mark.parametrize(
    ("image", "fmt", "params"),
    [
        # RGBA with every pixel opaque: no transparency
        (Image.new("RGBA", (3, 3), (1, 2, 3, 255)), "PNG", {}),
        # LA fully opaque
        (Image.new("LA", (3, 3), (9, 255)), "PNG", {}),
    ],
)
def test_fully_opaque_alpha_is_none(image: Image.Image, fmt: str, params: dict) -> None:
    assert load_image(encode(image, fmt, **params), max_pixels=LIMIT).alpha is None


def palette_image() -> Image.Image:
    image = Image.new("P", (4, 3), 0)
    image.putpalette([200, 0, 0, 0, 200, 0] + [0, 0, 0] * 254)
    image.putpixel((1, 1), 1)
    image.putpixel((3, 2), 1)
    return image


@pytest.mark.parametrize(
    ("fmt", "image", "params", "transparent"),
    [
        # PNG palette with a transparent index (tRNS)
        ("PNG", palette_image(), {"transparency": 1}, [(1, 1), (2, 3)]),
        # GIF with a transparent index
        ("GIF", palette_image(), {"transparency": 1}, [(1, 1), (2, 3)]),
        # greyscale PNG with a transparent grey value
        ("PNG", Image.new("L", (4, 3), 5), {"transparency": 5}, "all"),
        # RGB PNG with a transparent colour key
        ("PNG", Image.new("RGB", (4, 3), (1, 2, 3)), {"transparency": (1, 2, 3)}, "all"),
        # 16-bit greyscale PNG with a transparent value
        ("PNG", Image.new("I;16", (4, 3), 300), {"transparency": 300}, "all"),
    ],
)
def test_colour_key_transparency_becomes_alpha(
    fmt: str, image: Image.Image, params: dict, transparent: object
) -> None:
    loaded = load_image(encode(image, fmt, **params), max_pixels=LIMIT)

    assert loaded.alpha is not None
    expected = np.ones((3, 4), bool)
    if transparent == "all":
        expected[:] = False
    else:
        for row, col in transparent:  # type: ignore[attr-defined]
            expected[row, col] = False
    assert (loaded.alpha == expected).all()
    if image.mode == "P":
        assert tuple(loaded.rgb[0, 0]) == (200, 0, 0)


def test_la_alpha_mask() -> None:
    grey = Image.new("L", (3, 2), 100)
    alpha = Image.fromarray(np.array([[0, 255, 7], [255, 0, 255]], np.uint8))
    loaded = load_image(encode(Image.merge("LA", [grey, alpha]), "PNG"), max_pixels=LIMIT)
    assert loaded.alpha is not None
    assert loaded.alpha.tolist() == [[False, True, True], [True, False, True]]
    assert (loaded.rgb == 100).all()


# --------------------------------------------------------------------------------------
# sniffing


@pytest.mark.parametrize(
    ("head", "mime"),
    [
        (b"\xff\xd8\xff\xe0\x00\x10JFIF", "image/jpeg"),  # JFIF
        (b"\x89PNG\r\n\x1a\n\x00\x00", "image/png"),  # PNG signature
        (b"GIF89a\x01\x00", "image/gif"),  # GIF89a
        (b"GIF87a\x01\x00", "image/gif"),  # GIF87a
        (b"RIFF\x00\x00\x00\x00WEBPVP8 ", "image/webp"),  # WebP container
        (b"RIFF\x00\x00\x00\x00WAVEfmt ", None),  # a WAV file is RIFF too
        (b"BM" + b"\x00" * 12 + b"\x28\x00\x00\x00", "image/bmp"),  # BITMAPINFOHEADER
        (b"BMW is a car brand, not a bitmap", None),  # "BM" alone is not enough
        (b"II*\x00\x08\x00\x00\x00", "image/tiff"),  # little-endian TIFF
        (b"MM\x00*\x00\x00\x00\x08", "image/tiff"),  # big-endian TIFF
        (b"<html>", None),  # HTML
        (b"", None),  # empty
    ],
)
def test_sniff_mime(head: bytes, mime: str | None) -> None:
    assert sniff_mime(head) == mime
