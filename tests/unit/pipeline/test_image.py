"""Image step: real PNG and JPEG files made with Pillow; bombs, truncation, other formats."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import ExifTags, Image, ImageOps

from blindai.errors import PipelineError
from blindai.pipeline._image import compile_image, decode_image
from blindai.pipeline.limits import PipelineLimits
from blindai.pipeline.spec import ImageInput
from tests.unit.pipeline._factory import (
    Port,
    encode,
    jpeg_of_scans,
    jpeg_with_segments,
    png_claiming,
    png_with_chunks,
    png_with_exif,
    png_with_text,
    rgb_image,
)

F32 = np.dtype("float32")


def _spec(**kw):
    return ImageInput(kind="image", **kw)


def _step(spec, shape=(1, 3, None, None), dtype=F32, limits=None):
    return compile_image(spec, [Port("pixels", dtype, shape)], limits or PipelineLimits())


def test_png_to_nchw_normalised_matches_numpy():
    img = rgb_image(40, 30)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    out = _step(_spec(mean=mean, std=std))(encode(img, "PNG")).feeds["pixels"]
    ref = (np.asarray(img, np.float32) / 255 - np.array(mean, np.float32)) / np.array(
        std, np.float32
    )
    assert out.shape == (1, 3, 30, 40) and out.dtype == np.float32
    np.testing.assert_allclose(out[0], ref.transpose(2, 0, 1), rtol=1e-5, atol=1e-5)


def test_resize_shorter_then_centre_crop():
    img = rgb_image(80, 40)  # 2:1
    spec = _spec(resize_shorter=20, crop=(20, 20), resample="nearest", scale=1.0)
    out = _step(spec, shape=(1, 3, 20, 20))(encode(img, "PNG")).feeds["pixels"]
    assert out.shape == (1, 3, 20, 20)
    ref = np.asarray(img.resize((40, 20), Image.Resampling.NEAREST).crop((10, 0, 30, 20)))
    np.testing.assert_array_equal(out[0].transpose(1, 2, 0), ref.astype(np.float32))


def test_bgr_nhwc_and_grey():
    png = encode(rgb_image(8, 6), "PNG")
    rgb = _step(_spec(layout="NHWC", scale=1.0), shape=(1, None, None, 3))(png).feeds["pixels"]
    bgr = _step(_spec(layout="NHWC", scale=1.0, channels="BGR"), shape=(1, None, None, 3))(png)
    np.testing.assert_array_equal(bgr.feeds["pixels"], rgb[..., ::-1])
    grey = _step(_spec(channels="L"), shape=(1, 1, 6, 8))(png).feeds["pixels"]
    assert grey.shape == (1, 1, 6, 8)


def test_jpeg_decodes_close_to_the_source():
    img = rgb_image(64, 48)
    out = _step(_spec(resize=(48, 64), scale=1.0), shape=(1, 3, 48, 64))(
        encode(img, "JPEG", quality=95)
    )
    diff = np.abs(out.feeds["pixels"][0].transpose(1, 2, 0) - np.asarray(img, np.float32))
    assert diff.mean() < 3


def test_uint8_model_gets_raw_pixels():
    img = rgb_image(8, 8)
    out = _step(_spec(scale=1.0), shape=(1, 3, 8, 8), dtype=np.dtype("uint8"))(encode(img, "PNG"))
    np.testing.assert_array_equal(out.feeds["pixels"][0].transpose(1, 2, 0), np.asarray(img))


def test_palette_and_alpha_images_become_rgb():
    pal = rgb_image(8, 8).convert("P")
    pal.info["transparency"] = 0
    for img in (pal, rgb_image(8, 8).convert("RGBA")):
        assert _step(_spec())(encode(img, "PNG")).feeds["pixels"].shape == (1, 3, 8, 8)


def test_a_16_bit_grey_png_keeps_its_high_byte_as_16_bit_colour_does():
    # Pillow opens it as I;16 and clipped it to 8 bits: every pixel from 255 up became white
    grey = np.arange(16 * 16, dtype=np.uint16).reshape(16, 16) * 257
    data = encode(Image.fromarray(grey), "PNG")
    assert Image.open(io.BytesIO(data)).mode == "I;16"
    want = (grey >> 8).astype(np.float32)
    for spec, shape in ((_spec(channels="L", scale=1.0), (1, 1, 16, 16)), (_spec(scale=1.0), None)):
        out = _step(spec, shape=shape or (1, 3, None, None))(data).feeds["pixels"][0]
        for channel in out:
            np.testing.assert_array_equal(channel, want)
    half = _step(_spec(channels="L", resize=(8, 8), scale=1.0), shape=(1, 1, 8, 8))(data)
    assert 0 < half.feeds["pixels"].mean() < 255


def test_decompression_bomb_header_is_refused_before_decoding():
    # Pillow's own bomb check (over twice its MAX_IMAGE_PIXELS)
    with pytest.raises(PipelineError, match="more than 1000 pixels"):
        decode_image(png_claiming(30000, 30000), formats=("png",), max_pixels=1000)
    # ours, below Pillow's threshold: refused from the header, no pixel decoded
    with pytest.raises(PipelineError, match="image is 2000x2000; this server takes at most"):
        decode_image(png_claiming(2000, 2000), formats=("png",), max_pixels=1_000_000)


def test_a_jpeg_of_many_scans_is_refused_before_decoding():
    # libjpeg goes over every block of the image in each scan of a progressive file: 3000
    # scans without data (99 KB) of a 5000x5000 JPEG ran a worker for 10 s, past the run timeout
    step = _step(_spec())
    many = jpeg_of_scans(64, 64, 110)
    for call in (step.cost, step):
        with pytest.raises(PipelineError, match="110 start-of-scan markers; this server takes"):
            call(many)
    assert step(jpeg_of_scans(64, 64, 100)).feeds["pixels"].shape == (1, 3, 64, 64)


def test_a_jpeg_is_counted_by_the_scans_libjpeg_reads_not_by_its_bytes_ff_da():
    # the bytes FF DA were counted anywhere: data after the end of image (a phone's motion
    # photo carries its video there) or inside a segment refused a real JPEG, or costed a
    # baseline one as progressive
    rng = np.random.default_rng(7)
    img = Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    step = _step(_spec(scale=1.0))
    for progressive in (True, False):
        plain = encode(img, "JPEG", progressive=progressive)
        video = rng.bytes(8 << 20)
        assert video.count(b"\xff\xda") > 100
        comment = b"\xff\xfe\x00\x06\xff\xda\xff\xda"
        for data in (plain + video, plain[:2] + comment + plain[2:]):
            np.testing.assert_array_equal(step(data).feeds["pixels"], step(plain).feeds["pixels"])
            assert step.cost(data) == step.cost(plain)
    assert step.cost(encode(img, "JPEG", progressive=True)) > step.cost(encode(img, "JPEG"))


def test_a_progressive_jpeg_of_one_scan_is_costed_with_libjpegs_coefficient_buffer():
    # libjpeg keeps the whole image's coefficients for a progressive frame (or a first scan
    # of fewer components than the frame) from its first scan on, however many follow: a
    # 4000x4000 progressive CMYK JPEG cut to its DC scan peaked at 1.18 times its cost, costed
    # as a baseline one because it had one scan
    img = rgb_image(64, 48)
    full = encode(img, "JPEG", progressive=True)
    sos = [i for i in range(len(full) - 1) if full[i : i + 2] == b"\xff\xda"]
    one = full[: sos[1]] + b"\xff\xd9"  # the DC scan alone: libjpeg decodes it
    step = _step(_spec())
    assert step(one).feeds["pixels"].shape == (1, 3, 48, 64)
    assert step.cost(one) == step.cost(full) > step.cost(encode(img, "JPEG"))


def test_a_jpeg_of_too_many_markers_after_its_first_scan_is_refused():
    # the scans are counted by walking the file's markers in Python: they are bounded as the
    # header's are
    data = encode(rgb_image(8, 8), "JPEG", progressive=True)
    first = data.index(b"\xff\xc4", data.index(b"\xff\xda"))  # the second scan's table
    step = _step(_spec())
    for count, fragment in ((70_000, "more than 65536 markers"), (60_000, None)):
        many = data[:first] + b"\xff\xfe\x00\x02" * count + data[first:]
        if fragment is None:
            assert step(many).feeds["pixels"].shape == (1, 3, 8, 8)
            continue
        for call in (step.cost, step):
            with pytest.raises(PipelineError, match=fragment):
                call(many)


def test_a_jpeg_of_a_long_run_of_fill_bytes_where_libjpeg_reads_is_refused():
    # libjpeg reads a run of FF (fill bytes before a marker, or before a stuffed 0) without
    # saving its place: fed 64 KiB at a time by Pillow, it read the run again from its start
    # each time, and Pillow joined the data again: 8 MiB of FF in an 8x8 JPEG's scan took 1 s,
    # 64 MiB 58 s of a worker, which the run timeout cannot stop
    data = encode(rgb_image(8, 8), "JPEG")
    sos = data.index(b"\xff\xda")
    scan = sos + 2 + int.from_bytes(data[sos + 2 : sos + 4], "big")
    step = _step(_spec())
    end = len(data) - 2  # the end-of-image marker
    for count, refused in ((70_000, True), (60_000, False)):
        # in the coded data (a stuffed FF: FF... 00), or fill bytes before the end of image
        for bad in (
            data[:scan] + b"\xff" * count + b"\x00" + data[scan:],
            data[:end] + b"\xff" * count + data[end:],
        ):
            if not refused:
                assert step(bad).feeds["pixels"].shape == (1, 3, 8, 8)
                continue
            for call in (step.cost, step):
                with pytest.raises(PipelineError, match="65536 bytes FF in a row"):
                    call(bad)
    after_the_end = data + b"\xff" * 70_000  # not read by libjpeg
    assert step(after_the_end).feeds["pixels"].shape == (1, 3, 8, 8)


@pytest.mark.parametrize(
    ("many", "few", "fragment"),
    [
        (png_with_chunks(70_000), png_with_chunks(60_000), "PNG holds more than 65536 chunks"),
        (png_with_chunks(70_000, b"IDAT"), None, "PNG holds more than 65536 chunks"),
        (jpeg_with_segments(70_000), jpeg_with_segments(60_000), "more than 65536 segments"),
        (jpeg_with_segments(0, 70_000), jpeg_with_segments(0, 60_000), "or bytes outside"),
        # Pillow reads on past an end of image, and reads FF C8 (JPG) and FF 00 without a
        # length: the walk once skipped what followed as a segment's, or stopped there
        (jpeg_with_segments(70_000, lead=b"\xff\xd9"), None, "more than 65536 segments"),
        (jpeg_with_segments(70_000, lead=b"\xff\xc8"), None, "more than 65536 segments"),
        (jpeg_with_segments(70_000, lead=b"\xff\x00"), None, "more than 65536 segments"),
        (jpeg_with_segments(70_000, lead=b"\xff\xf0"), None, "more than 65536 segments"),
        (jpeg_with_segments(60_000, lead=b"\xff\x00"), None, None),
    ],
)
def test_an_image_of_too_many_chunks_is_refused_before_pillow_reads_them(many, few, fragment):
    # Pillow reads a PNG's chunks and a JPEG's header segments (and the stray bytes between
    # them) one at a time in Python, in the worker, for the cost and again for the decode:
    # 64 MiB of empty chunks or comments held it for 50 s
    step = _step(_spec())
    if fragment is None:  # under the bound: Pillow reads it
        assert step(many).feeds["pixels"].shape == (1, 3, 8, 8)
        return
    for call in (step.cost, step):
        with pytest.raises(PipelineError, match=fragment):
            call(many)
    if few is not None:
        assert step(few).feeds["pixels"].shape == (1, 3, 8, 8)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_every_exif_orientation_is_applied_as_pillows_exif_transpose_applies_it(fmt):
    img = rgb_image(12, 8)
    for orientation in range(1, 9):
        exif = Image.Exif()
        exif[ExifTags.Base.Orientation] = orientation
        data = encode(img, fmt, exif=exif.tobytes())
        want = ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB")
        got = decode_image(data, formats=("png", "jpeg"), max_pixels=1000).convert("RGB")
        assert got.size == want.size
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


def test_a_pngs_text_chunks_are_counted_in_its_cost_and_bounded_before_pillow_reads_them():
    # Pillow inflates each compressed text chunk up to 1 MiB and keeps it as a string (4 bytes
    # a character with one emoji), up to 64 million characters: a 65 KiB PNG of 63 iTXt chunks
    # took 259 MB in cost() itself, before any budget, which said 3968 bytes
    step = _step(_spec())
    plain = step.cost(encode(Image.new("RGB", (8, 8)), "PNG"))
    for kind, few, many in ((b"iTXt", 14, 16), (b"zTXt", 56, 63)):
        data = png_with_text(few, kind)
        per_chunk = 4 if kind == b"iTXt" else 1
        assert step.cost(data) >= plain + few * per_chunk * (1 << 20)
        assert step(data).feeds["pixels"].shape == (1, 3, 8, 8)
        for call in (step.cost, step):
            with pytest.raises(PipelineError, match="PNG's text chunks could take more than"):
                call(png_with_text(many, kind))


def test_an_image_of_more_exif_than_a_jpeg_can_hold_is_refused():
    # Pillow reads EXIF in Python, entry by entry, twice to rotate the image and again for each
    # IFD it points to: a PNG's eXIf chunk has no bound of its own, and one of 65535 entries
    # named three times (764 KiB) held a worker for 9 s; a JPEG's EXIF fits one 64 KiB segment
    step = _step(_spec(), shape=(1, 3, None, None))
    small = png_with_exif(3000, ifd_pointers=True)  # 36 KB: what a JPEG may hold
    assert step(small).feeds["pixels"].shape == (1, 3, 8, 4)  # rotated: 4 wide, 8 high
    for big in (png_with_exif(5462), png_with_exif(16000, ifd_pointers=True)):
        with pytest.raises(PipelineError, match="EXIF of more than 65533 bytes"):
            step(big)


def test_truncated_files_are_refused():
    for fmt in ("PNG", "JPEG"):
        data = encode(rgb_image(64, 64), fmt)
        with pytest.raises(PipelineError, match="truncated or corrupt"):
            _step(_spec())(data[: len(data) - 30])
        with pytest.raises(PipelineError, match=r"truncated or corrupt|is not a readable"):
            _step(_spec())(data[: len(data) // 2])


@pytest.mark.parametrize(
    ("data", "formats"),
    [
        (encode(rgb_image(8, 8), "GIF"), ("png", "jpeg")),
        (encode(rgb_image(8, 8), "BMP"), ("png", "jpeg")),
        (encode(rgb_image(8, 8), "JPEG"), ("png",)),
        (b"not an image", ("png", "jpeg")),
        (b"", ("png", "jpeg")),
    ],
)
def test_other_formats_are_refused(data, formats):
    with pytest.raises(PipelineError, match="is not a readable"):
        _step(_spec(formats=formats))(data)


def test_text_is_not_an_image():
    with pytest.raises(PipelineError, match="must be sent as bytes"):
        _step(_spec())("a string")


def test_crop_larger_than_the_image():
    with pytest.raises(PipelineError, match="smaller than the 16x16 crop"):
        _step(_spec(crop=(16, 16)), shape=(1, 3, 16, 16))(encode(rgb_image(8, 8), "PNG"))


@pytest.mark.parametrize(
    ("spec", "port", "fragment"),
    [
        (_spec(crop=(224, 224)), Port("x", F32, (1, 3, 256, 256)), "the image step makes"),
        (_spec(), Port("x", F32, (1, 1, None, None)), "the image step makes"),
        (_spec(), Port("x", np.dtype("int64"), (1, 3, None, None)), "images need a float"),
        (_spec(), Port("x", np.dtype("uint8"), (1, 3, None, None)), "drop scale, mean and std"),
        (_spec(input="y"), Port("x", F32, (1, 3, None, None)), "no input named 'y'"),
        (_spec(dtype="uint8"), Port("x", F32, (1, 3, None, None)), "says dtype uint8"),
        (_spec(dtype="float16"), Port("x", F32, (1, 3, None, None)), "says dtype float16"),
    ],
)
def test_refuses_models_it_cannot_feed(spec, port, fragment):
    with pytest.raises(PipelineError) as info:
        compile_image(spec, [port], PipelineLimits())
    assert fragment in str(info.value)


@pytest.mark.parametrize(
    ("spec", "dtype"),
    [
        (_spec(scale=1e39), "float32"),  # inf in float32: every pixel but 0 became inf
        (_spec(std=(1e-46,)), "float32"),  # 0 in float32: a division by zero
        (_spec(scale=1000.0), "float16"),  # 255 000: past float16's 65504
    ],
)
def test_normalisation_the_model_inputs_type_cannot_hold_is_refused(spec, dtype):
    port = Port("x", np.dtype(dtype), (1, 3, None, None))
    with pytest.raises(PipelineError, match=f"make values {dtype} cannot hold"):
        compile_image(spec, [port], PipelineLimits())
    fine = _step(_spec(scale=100.0), dtype=np.dtype("float16"))(encode(rgb_image(8, 8), "PNG"))
    assert np.isfinite(fine.feeds["pixels"]).all()


def test_models_with_other_inputs_are_refused():
    ports = [Port("x", F32, (1, 3, 8, 8)), Port("y", F32, (1,))]
    with pytest.raises(PipelineError, match="name the one"):
        compile_image(_spec(), ports, PipelineLimits())
    with pytest.raises(PipelineError, match=r"feeds no value to model input\(s\) \['y'\]"):
        compile_image(_spec(input="x"), ports, PipelineLimits())


def test_resize_shorter_of_a_thin_image_is_bounded_by_max_image_pixels():
    # 1x2000 is 2000 pixels; its shorter side to 224 would make 224x448000 (100 M pixels):
    # with the defaults a 118-byte 1x20000 PNG took 1.2 GB and 4 s before this was refused.
    thin = encode(Image.new("L", (1, 2000)), "PNG")
    spec = _spec(resize_shorter=224, crop=(224, 224))
    step = _step(spec, shape=(1, 3, 224, 224), limits=PipelineLimits(max_image_pixels=1_000_000))
    with pytest.raises(PipelineError, match=r"1x2000.*224x448000.*1000000 pixels"):
        step(thin)
    square = _step(spec, shape=(1, 3, 224, 224), limits=PipelineLimits(max_image_pixels=1_000_000))
    assert square(encode(rgb_image(300, 400), "PNG")).feeds["pixels"].shape == (1, 3, 224, 224)


@pytest.mark.parametrize("dtype", ["float32", "float16", "float64"])
def test_a_dtype_the_model_input_has_is_accepted(dtype):
    out = _step(_spec(dtype=dtype), shape=(1, 3, 8, 8), dtype=np.dtype(dtype))(
        encode(rgb_image(8, 8), "PNG")
    ).feeds["pixels"]
    assert out.dtype == np.dtype(dtype) and out.shape == (1, 3, 8, 8)
