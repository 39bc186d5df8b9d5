"""Image step: decode PNG/JPEG (Pillow), resize, centre-crop, scale, normalise, lay out, batch.

A request's image is refused from its header when it has more than ``max_image_pixels``
pixels, more than ``MAX_IMAGE_PARTS`` chunks (a PNG) or header segments (a JPEG), or (a JPEG)
more than :data:`MAX_JPEG_SCANS` scans, before any pixel is decoded; truncated files and other
formats are refused too.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import ExifTags, Image

from blindai.errors import PipelineError
from blindai.pipeline._image_parts import (
    MAX_IMAGE_PARTS,
    MAX_PNG_TEXT_BYTES,
    JpegScans,
    image_parts,
)
from blindai.pipeline._image_parts import jpeg_scans as _read_scans
from blindai.pipeline._ports import Port, Prepared, dims_fit, pick_port
from blindai.pipeline.limits import PipelineLimits
from blindai.pipeline.spec import ImageInput
from blindai.server._shown import shown, shown_names

__all__ = [
    "MAX_EXIF_BYTES",
    "MAX_JPEG_SCANS",
    "ImageStep",
    "NormalisationOverflow",
    "compile_image",
    "decode_image",
    "image_to_array",
    "jpeg_scans",
    "open_image",
]

_FORMATS = {"png": "PNG", "jpeg": "JPEG"}
_RESAMPLE = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}
_DTYPES = tuple(np.dtype(t) for t in ("float32", "float16", "float64", "uint8"))


MAX_JPEG_SCANS = 100
"""Most start-of-scan markers (``FF DA``) a JPEG may hold. libjpeg reads every scan of a
progressive file before any pixel is out, going over every block of the image in each, with
or without data: 3000 scans without data (99 KB) of a 5000x5000 JPEG took 10 s, a worker held
past the run timeout. A progressive JPEG has about 10 (libjpeg's, mozjpeg's), a baseline one 1
to 4; the count is of the scans libjpeg reaches (:func:`~._image_parts.jpeg_scans`), not
of the bytes ``FF DA`` in an EXIF thumbnail, an ICC profile or data after the end of image."""

MAX_EXIF_BYTES = 65533
"""Most bytes of an image's EXIF (what a JPEG's APP1 segment holds, its ``Exif`` header
included). Pillow reads EXIF in Python, entry by entry: to rotate an image it reads it twice,
and again for each IFD a pointer names; a PNG's ``eXIf`` chunk (or ImageMagick's ``Raw profile
type exif`` text) has no bound of its own, and 764 KiB of it (65535 entries, the Exif and GPS
pointers naming the same IFD) held a worker for 9 s; within this bound, under 1 s."""

BYTES_PER_DECODED_PIXEL = 10
"""Memory per pixel of the decoded image: its pixels (up to 4 bytes: RGBA, CMYK, 32-bit grey),
the EXIF rotation's and the mode conversion's copies."""
BYTES_PER_COEFFICIENT = 2
"""Memory per sample (a pixel's channel) of a JPEG whose coefficients libjpeg buffers (a
progressive frame, or components in scans of their own: :attr:`JpegScans.whole_image`, even
with one scan in the file), while it is decoded: libjpeg keeps the whole image's DCT
coefficients, 16 bits each, beside Pillow's pixels (a 4000x4000 progressive CMYK JPEG peaked
at 11.9 bytes a pixel)."""
BYTES_PER_RESIZED_PIXEL = 4
"""Memory per pixel of the resized image (before the crop): RGB or RGBA, 8 bits a channel."""
BYTES_PER_OUTPUT_PIXEL = 48
"""Memory per pixel of what the step makes: the 8-bit RGB image, float32 copies for the scale,
mean and std (3 channels x 4 bytes each), the transposed, contiguous feed (up to float64)."""


_NO_SCANS = JpegScans(0, whole_image=False)


def jpeg_scans(data: bytes, img: Image.Image) -> JpegScans:
    """The scans libjpeg reads of a JPEG (:func:`~._image_parts.jpeg_scans`, which refuses a
    file libjpeg or the count would read too slowly); none for another format."""
    return _read_scans(data) if img.format in ("JPEG", "MPO") else _NO_SCANS


def open_image(data: bytes, *, formats: Sequence[str], max_pixels: int) -> Image.Image:
    """Read a PNG or JPEG's header (no pixel decoded), refusing other formats, images of more
    than ``max_pixels`` pixels, files of more than ``MAX_IMAGE_PARTS`` chunks or header
    segments (:mod:`._image_parts`) and JPEGs of more than :data:`MAX_JPEG_SCANS` scans."""
    return _opened(data, formats=formats, max_pixels=max_pixels)[0]


def _opened(
    data: bytes, *, formats: Sequence[str], max_pixels: int
) -> tuple[Image.Image, JpegScans, int]:
    """:func:`open_image`, the JPEG's scans (none for a PNG: the walk that counts them is made
    once per call, up to 0.6 s on 64 MiB of hostile data) and what the PNG's text chunks take
    once read (:attr:`~._image_parts.ImageParts.text_bytes`)."""
    allowed = [_FORMATS[f] for f in formats]
    parts = image_parts(data)
    if parts is not None and parts.parts > MAX_IMAGE_PARTS:
        what = "chunks" if parts.kind == "PNG" else "segments (or bytes outside them)"
        raise PipelineError(
            f"{parts.kind} holds more than {MAX_IMAGE_PARTS} {what}"
            + (" before its first scan" if parts.kind == "JPEG" else "")
        )
    text = 0 if parts is None else parts.text_bytes
    if text > MAX_PNG_TEXT_BYTES:  # Pillow reads those before IDAT as it opens the file
        raise PipelineError(
            f"the PNG's text chunks could take more than {MAX_PNG_TEXT_BYTES} bytes once read "
            f"({text})"
        )
    try:
        img = Image.open(io.BytesIO(data), formats=allowed)
    except Image.DecompressionBombError:
        raise PipelineError(f"image has more than {max_pixels} pixels") from None
    except Exception:  # Pillow raises UnidentifiedImageError, OSError, SyntaxError, ...
        raise PipelineError(f"image is not a readable {' or '.join(allowed)} file") from None
    width, height = img.size
    if width * height > max_pixels:
        raise PipelineError(
            f"image is {width}x{height}; this server takes at most {max_pixels} pixels"
        )
    scans = jpeg_scans(data, img)
    if scans.count > MAX_JPEG_SCANS:
        raise PipelineError(
            f"JPEG holds {scans.count} start-of-scan markers; this server takes at most "
            f"{MAX_JPEG_SCANS} scans"
        )
    return img, scans, text


def decode_image(data: bytes, *, formats: Sequence[str], max_pixels: int) -> Image.Image:
    """Decode a PNG or JPEG, refusing other formats, bombs and truncated files."""
    img = open_image(data, formats=formats, max_pixels=max_pixels)
    try:
        img.load()  # a PNG's chunks after its pixels (an eXIf among them) are read here
    except Exception:  # truncated or corrupt pixel data
        raise PipelineError(f"image {img.format} data is truncated or corrupt") from None
    if _exif_bytes(img) > MAX_EXIF_BYTES:
        raise PipelineError(f"image holds EXIF of more than {MAX_EXIF_BYTES} bytes")
    try:
        return _upright(img)
    except Exception:  # EXIF Pillow cannot read
        raise PipelineError(f"image {img.format} data is truncated or corrupt") from None


_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
"""The transposition of each EXIF orientation, as ``ImageOps.exif_transpose``'s."""


def _upright(img: Image.Image) -> Image.Image:
    """``img`` turned as its EXIF (or XMP) orientation says, as ``ImageOps.exif_transpose``
    turns it, without what that also does for an image that is saved again: read the EXIF a
    second time from the copy and write it back without the orientation, reading every IFD its
    pointers name (5400 entries named three times took it 0.77 s; this, 0.03 s)."""
    method = _TRANSPOSE.get(img.getexif().get(ExifTags.Base.Orientation, 1))
    return img if method is None else img.transpose(method)


def _exif_bytes(img: Image.Image) -> int:
    """The bytes of EXIF Pillow would read of ``img``: its ``exif`` (with the ``Exif`` header
    a JPEG's segment has), else ImageMagick's hexadecimal ``Raw profile type exif`` text."""
    exif = img.info.get("exif")
    if isinstance(exif, bytes):
        return len(exif)
    raw = img.info.get("Raw profile type exif")
    if not isinstance(raw, str):
        return 0
    return (len(raw) - raw.count("\n") - raw.count(" ")) // 2  # its digits, two a byte


def _out_size(spec: ImageInput) -> tuple[int | None, int | None]:
    if spec.crop is not None:
        return spec.crop
    if spec.resize is not None:
        return spec.resize
    return None, None


def _resized_size(size: tuple[int, int], spec: ImageInput, max_pixels: int) -> tuple[int, int]:
    """The image's (width, height) after the spec's resize (itself without one); PipelineError
    when ``resize_shorter`` makes more than ``max_pixels``."""
    if spec.resize is not None:
        height, width = spec.resize
        return width, height
    if spec.resize_shorter is not None:
        w, h = size
        ratio = spec.resize_shorter / min(w, h)
        new = (max(1, round(w * ratio)), max(1, round(h * ratio)))
        if new[0] * new[1] > max_pixels:  # a thin image grows along its long side
            raise PipelineError(
                f"image is {w}x{h}; resizing its shorter side to {spec.resize_shorter} makes "
                f"{new[0]}x{new[1]}, more than this server's {max_pixels} pixels"
            )
        return new
    return size


def _resize(img: Image.Image, spec: ImageInput, max_pixels: int) -> Image.Image:
    if spec.resize is None and spec.resize_shorter is None:
        return img
    return img.resize(_resized_size(img.size, spec, max_pixels), _RESAMPLE[spec.resample])


def _crop(img: Image.Image, spec: ImageInput) -> Image.Image:
    if spec.crop is None:
        return img
    ch, cw = spec.crop
    w, h = img.size
    if cw > w or ch > h:
        raise PipelineError(f"image is {w}x{h} after resizing, smaller than the {cw}x{ch} crop")
    left, top = round((w - cw) / 2), round((h - ch) / 2)
    return img.crop((left, top, left + cw, top + ch))


def _high_byte(img: Image.Image) -> Image.Image:
    """A 16-bit grey image (``I;16``, ``I``) as 8-bit grey, each pixel its high byte, as Pillow
    reads 16-bit colour PNGs."""
    grey = np.right_shift(np.asarray(img), 8)
    return Image.fromarray(np.clip(grey, 0, 255).astype(np.uint8), "L")


def image_to_array(
    img: Image.Image, spec: ImageInput, dtype: np.dtype[Any], *, max_pixels: int
) -> np.ndarray:
    """Resize, crop, convert and normalise one image into a batch of one.

    PipelineError when ``resize_shorter`` would make an image of more than ``max_pixels``.
    """
    if img.mode in ("P", "PA"):
        img = img.convert("RGBA")  # palette transparency, without Pillow's warning
    elif img.mode.startswith("I"):  # 16-bit grey PNG: Pillow's own conversion clips at 255
        img = _high_byte(img)
    img = _crop(_resize(img, spec, max_pixels), spec).convert(
        "L" if spec.channels == "L" else "RGB"
    )
    arr = np.asarray(img)
    arr = arr[:, :, None] if arr.ndim == 2 else arr
    if spec.channels == "BGR":
        arr = arr[:, :, ::-1]
    if dtype != np.uint8:
        mean = np.asarray(spec.mean, dtype=np.float32)
        std = np.asarray(spec.std, dtype=np.float32)
        arr = (arr.astype(np.float32) * np.float32(spec.scale) - mean) / std
    if spec.layout == "NCHW":
        arr = arr.transpose(2, 0, 1)
    return np.ascontiguousarray(arr[None], dtype=dtype)


@dataclass(frozen=True)
class ImageStep:
    """Decode and preprocess one image into the model's image input."""

    spec: ImageInput
    input_name: str
    dtype: np.dtype[Any]
    max_pixels: int
    kind: str = "image"

    def cost(self, raw: bytes | str) -> int:
        """The most memory (bytes) preprocessing ``raw`` may take, from its header alone;
        PipelineError for what :meth:`__call__` refuses from the header."""
        if not isinstance(raw, bytes):
            raise PipelineError("an image must be sent as bytes")
        img, scans, text = _opened(raw, formats=self.spec.formats, max_pixels=self.max_pixels)
        width, height = img.size
        mid_w, mid_h = _resized_size(img.size, self.spec, self.max_pixels)
        out_h, out_w = self.spec.crop if self.spec.crop is not None else (mid_h, mid_w)
        decoded = BYTES_PER_DECODED_PIXEL
        if scans.whole_image:
            decoded += BYTES_PER_COEFFICIENT * len(img.getbands())
        return (
            text
            + decoded * width * height
            + BYTES_PER_RESIZED_PIXEL * mid_w * mid_h
            + BYTES_PER_OUTPUT_PIXEL * out_w * out_h
        )

    def __call__(self, raw: bytes | str) -> Prepared:
        """Bytes of a PNG or JPEG file in, the model's feed out."""
        if not isinstance(raw, bytes):
            raise PipelineError("an image must be sent as bytes")
        img = decode_image(raw, formats=self.spec.formats, max_pixels=self.max_pixels)
        return Prepared(
            {
                self.input_name: image_to_array(
                    img, self.spec, self.dtype, max_pixels=self.max_pixels
                )
            }
        )


class NormalisationOverflow(PipelineError):
    """An image step's ``scale``, ``mean`` and ``std`` make values the model input's type
    ``dtype`` cannot hold. Its message names no part of the model (the restorer logs it)."""

    def __init__(self, dtype: np.dtype[Any]) -> None:
        super().__init__(
            f"input: scale, mean and std make values {dtype} cannot hold (pixels of 0 and 255 "
            "become infinite or undefined)"
        )
        self.dtype = str(dtype)


def _check_range(spec: ImageInput, dtype: np.dtype[Any]) -> None:
    """NormalisationOverflow (a PipelineError) when ``(x * scale - mean) / std``, computed as a
    request's is, overflows or divides by zero in ``dtype`` for a pixel of 0 or 255 (the
    transform is affine: its extremes are there)."""
    ends = np.array([[0.0], [255.0]], np.float32)
    with np.errstate(all="ignore"):
        mean = np.asarray(spec.mean, dtype=np.float32)
        std = np.asarray(spec.std, dtype=np.float32)
        made = ((ends * np.float32(spec.scale) - mean) / std).astype(dtype)
    if not np.isfinite(made).all():
        raise NormalisationOverflow(dtype)


def compile_image(spec: ImageInput, inputs: Sequence[Port], limits: PipelineLimits) -> ImageStep:
    """Check the step against the model's image input (rank 4, channels, size, dtype)."""
    port = pick_port(inputs, spec.input, "input")
    if len(inputs) != 1:
        others = [p.name for p in inputs if p.name != port.name]
        raise PipelineError(
            f"the image step feeds no value to model input(s) {shown_names(others)}"
        )
    if port.dtype not in _DTYPES:
        raise PipelineError(
            f"model input {shown(port.name)} is {port.dtype}; images need a float or uint8 input"
        )
    assert port.dtype is not None
    if spec.dtype is not None and np.dtype(spec.dtype) != port.dtype:
        raise PipelineError(
            f"the image step says dtype {spec.dtype}; model input {shown(port.name)} is "
            f"{port.dtype}"
        )
    if port.dtype == np.uint8 and (spec.scale, spec.mean, spec.std) != (1.0, (0.0,), (1.0,)):
        raise PipelineError("a uint8 model input takes raw pixels: drop scale, mean and std")
    if port.dtype != np.uint8:
        _check_range(spec, port.dtype)
    height, width = _out_size(spec)
    channels = 1 if spec.channels == "L" else 3
    made = (1, channels, height, width) if spec.layout == "NCHW" else (1, height, width, channels)
    if not dims_fit(made, port.shape):
        show = ["?" if d is None else d for d in made]
        raise PipelineError(
            f"model input {shown(port.name)} has shape {list(port.shape)}; the image step "
            f"makes {show}"
        )
    return ImageStep(spec, port.name, port.dtype, limits.max_image_pixels)
