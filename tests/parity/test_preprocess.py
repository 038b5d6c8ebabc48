"""``florence2_runtime.inputs.images`` against the checkpoint's ``Florence2Processor``: bit-exact pixels.

What ``load_image`` and ``preprocess`` refuse: tests/runtime/test_images.py.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from florence2_runtime.inputs.image_size import ImageSize
from florence2_runtime.inputs.images import load_image, preprocess
from tests.helpers.images import make_test_image

pytestmark = pytest.mark.parity

SIZES = [
    (1, 1),
    (3, 7),
    (7, 3),
    (2, 2),
    (127, 129),
    (128, 128),
    (160, 120),
    (33, 200),
    (300, 31),
    (1501, 997),
]  # (width, height)


def runtime_pixels(hf_processor, images, size=None) -> np.ndarray:
    ip = hf_processor.image_processor
    size = size or ImageSize(width=ip.size.width, height=ip.size.height)
    return preprocess(
        [load_image(im) for im in images],
        size=size,
        mean=ip.image_mean,
        std=ip.image_std,
        resample=ip.resample,
        rescale_factor=ip.rescale_factor,
    )


def reference_pixels(hf_processor, images, return_tensors="np") -> np.ndarray:
    batch = hf_processor(text=["<OD>"] * len(images), images=images, return_tensors=return_tensors)
    pv = batch["pixel_values"]
    return pv if isinstance(pv, np.ndarray) else pv.numpy()


def assert_bit_exact(got: np.ndarray, expected: np.ndarray) -> None:
    assert got.dtype == np.float32 and expected.dtype == np.float32
    assert got.shape == expected.shape
    assert got.tobytes() == expected.tobytes(), f"max |diff| {np.abs(got - expected).max()}"


def test_reference_is_the_pil_backend_and_converts_nothing(tiny_checkpoint, hf_processor):
    """Facts the runtime relies on (transformers 5): PIL backend, no RGB conversion, bicubic."""
    from transformers import AutoProcessor
    from transformers.utils import is_torchvision_available

    ip = hf_processor.image_processor
    assert ip.backend == "pil"
    assert not ip.do_convert_rgb  # null in the published preprocessor_config.json
    assert ip.resample == 3 and not ip.do_center_crop
    if not is_torchvision_available():  # the default is torchvision when it is installed
        assert AutoProcessor.from_pretrained(tiny_checkpoint).image_processor.backend == "pil"


@pytest.mark.parametrize("return_tensors", ["np", "pt"])
def test_rgb_images_of_many_sizes(hf_processor, return_tensors):
    images = [make_test_image(w, h, seed=i) for i, (w, h) in enumerate(SIZES)]
    got = runtime_pixels(hf_processor, images)
    assert got.shape == (len(images), 3, 128, 128) and got.flags.c_contiguous
    assert_bit_exact(got, reference_pixels(hf_processor, images, return_tensors))


@pytest.mark.parametrize("size", [ImageSize(96, 64), ImageSize(768, 768), ImageSize(17, 31)])
def test_other_target_sizes(hf_processor, size):
    images = [make_test_image(w, h, seed=i) for i, (w, h) in enumerate([(5, 9), (250, 180), (768, 768)])]
    ip = hf_processor.image_processor
    target = {"height": size.height, "width": size.width}
    expected = ip(images, size=target, return_tensors="np")["pixel_values"]
    assert expected.shape[2:] == (size.height, size.width)
    assert_bit_exact(runtime_pixels(hf_processor, images, size=size), expected)


@pytest.mark.parametrize("mode", ["RGBA", "L", "P", "LA", "PA", "CMYK", "1", "I;16", "I", "F", "YCbCr"])
def test_pil_modes_are_converted_like_convert_rgb(hf_processor, mode):
    rgb = make_test_image(45, 31, seed=3)
    if mode == "I;16":
        image = Image.fromarray(np.asarray(rgb.convert("L"), dtype=np.uint16) * 7)
    elif mode == "PA":
        image = rgb.convert("P")
        image.putalpha(128)
    else:
        image = rgb.convert(mode)
    if mode == "RGBA":
        image.putalpha(Image.linear_gradient("L").resize(image.size))
    loaded = load_image(image)
    assert loaded.mode == "RGB" and loaded.size == image.size
    assert np.array_equal(np.asarray(loaded), np.asarray(image.convert("RGB")))
    # the processor itself refuses non-RGB input (do_convert_rgb is null): compare on the converted image
    expected = reference_pixels(hf_processor, [image.convert("RGB")])
    assert_bit_exact(runtime_pixels(hf_processor, [image]), expected)


def test_numpy_inputs(hf_processor):
    rgb = np.asarray(make_test_image(37, 23, seed=4))  # [H, W, 3] uint8
    alpha = np.arange(37 * 23, dtype=np.uint8).reshape(23, 37, 1)
    gray = rgb[:, :, 1].copy()
    cases = {
        "hwc3": (rgb, rgb),
        "hwc4": (np.concatenate([rgb, alpha], axis=2), rgb),
        "hw": (gray, np.repeat(gray[:, :, None], 3, axis=2)),
        "hwc1": (gray[:, :, None], np.repeat(gray[:, :, None], 3, axis=2)),
        "non-contiguous": (rgb[:, ::-1], rgb[:, ::-1]),
    }
    for name, (array, expected_rgb) in cases.items():
        loaded = load_image(array)
        assert loaded.mode == "RGB", name
        assert np.array_equal(np.asarray(loaded), expected_rgb), name
    arrays = [a for a, _ in cases.values()]
    references = [Image.fromarray(np.ascontiguousarray(e)) for _, e in cases.values()]
    assert_bit_exact(runtime_pixels(hf_processor, arrays), reference_pixels(hf_processor, references))


def _encoded(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def test_bytes_and_paths(hf_processor, tmp_path):
    rgba = make_test_image(53, 41, seed=5).convert("RGBA")
    png = _encoded(rgba, "PNG")
    jpeg = _encoded(make_test_image(64, 48, seed=6), "JPEG", quality=90)
    gif = _encoded(make_test_image(20, 30, seed=7).convert("P"), "GIF")
    (tmp_path / "a.png").write_bytes(png)
    (tmp_path / "b.jpg").write_bytes(jpeg)
    for data in (png, jpeg, gif):
        decoded = Image.open(io.BytesIO(data)).convert("RGB")
        for variant in (data, bytearray(data), memoryview(data)):
            assert np.array_equal(np.asarray(load_image(variant)), np.asarray(decoded))
    paths = [str(tmp_path / "a.png"), tmp_path / "b.jpg"]
    for path in paths:
        assert np.array_equal(np.asarray(load_image(path)), np.asarray(Image.open(path).convert("RGB")))
    # transformers loads str paths itself (EXIF transpose + convert RGB): same pixels
    expected = reference_pixels(hf_processor, [str(tmp_path / "b.jpg")])
    assert_bit_exact(runtime_pixels(hf_processor, [tmp_path / "b.jpg"]), expected)


def test_exif_orientation_of_files_matches_transformers(hf_processor, tmp_path):
    image = make_test_image(60, 30, seed=8)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    path = tmp_path / "rotated.jpg"
    image.save(path, format="JPEG", exif=exif)
    loaded = load_image(path)
    assert loaded.size == (30, 60)  # transposed
    assert np.array_equal(np.asarray(load_image(path.read_bytes())), np.asarray(loaded))
    assert_bit_exact(runtime_pixels(hf_processor, [path]), reference_pixels(hf_processor, [str(path)]))
