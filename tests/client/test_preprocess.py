"""MNIST-style preprocessing: real pictures of digits come out in the model's canonical form."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from client.contract import DIGIT_BOX, IMAGE_SIZE
from client.model_client import ClientConfig, connect
from client.preprocess import (
    ACCEPTED_FORMATS,
    BadImage,
    ImageLimits,
    ImageTooLarge,
    decode_image,
    prepare_image,
    to_mnist,
)

SAMPLES = 40  # test digits pushed through each distortion


def blurred_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation after a 3x3 box blur: forgives sub-pixel shifts of thin strokes."""

    def blur(x: np.ndarray) -> np.ndarray:
        p = np.pad(x.astype(np.float64), 1)
        return sum(p[dy : dy + IMAGE_SIZE, dx : dx + IMAGE_SIZE] for dy in range(3) for dx in range(3))

    a, b = blur(a).ravel(), blur(b).ravel()
    a, b = a - a.mean(), b - b.mean()
    return float(a @ b / np.sqrt((a @ a) * (b @ b)))


def png(array: np.ndarray, mode: str | None = None) -> bytes:
    out = io.BytesIO()
    Image.fromarray(array, mode).save(out, "PNG") if mode else Image.fromarray(array).save(out, "PNG")
    return out.getvalue()


def shifted(digit: np.ndarray) -> np.ndarray:
    """Off-centre in a larger black field."""
    field = np.zeros((64, 90), np.uint8)
    field[3 : 3 + IMAGE_SIZE, 55 : 55 + IMAGE_SIZE] = digit
    return field


def scaled_up(digit: np.ndarray) -> np.ndarray:
    return np.asarray(Image.fromarray(digit).resize((150, 150), Image.Resampling.BILINEAR))


def thickened(digit: np.ndarray) -> np.ndarray:
    """Strokes one pixel fatter on every side (3x3 max filter)."""
    p = np.pad(digit, 1)
    windows = [p[dy : dy + IMAGE_SIZE, dx : dx + IMAGE_SIZE] for dy in range(3) for dx in range(3)]
    return np.max(windows, axis=0)


def inverted_on_paper(digit: np.ndarray) -> bytes:
    """Dark ink on white paper, as a phone scan would have it (JPEG)."""
    out = io.BytesIO()
    Image.fromarray(255 - scaled_up(digit)).save(out, "JPEG", quality=90)
    return out.getvalue()


def photo_like(digit: np.ndarray, seed: int = 0) -> bytes:
    """A 640x480 colour JPEG: unevenly lit tinted paper with noise, a dark blue digit off-centre."""
    rng = np.random.default_rng(seed)
    height, width = 480, 640
    ys, xs = np.mgrid[:height, :width]
    paper = np.stack([150 + 80 * xs / width, 170 + 60 * ys / height, 210 - 60 * xs / width], axis=-1)
    paper += 6 * rng.standard_normal(paper.shape, dtype=np.float32)
    ink = np.asarray(Image.fromarray(digit).resize((180, 180), Image.Resampling.BILINEAR)) / 255.0
    top, left = 170, 330
    region = paper[top : top + 180, left : left + 180]
    blue = np.array([25, 30, 90])
    paper[top : top + 180, left : left + 180] = region * (1 - ink[..., None]) + blue * ink[..., None]
    out = io.BytesIO()
    Image.fromarray(np.clip(paper, 0, 255).astype(np.uint8), "RGB").save(out, "JPEG", quality=85)
    return out.getvalue()


DISTORTIONS = {
    "shifted": lambda d: to_mnist(shifted(d)),
    "scaled_up": lambda d: to_mnist(scaled_up(d)),
    "thickened": lambda d: to_mnist(thickened(d)),
    "inverted_jpeg": lambda d: prepare_image(inverted_on_paper(d)),
    "colour_photo": lambda d: prepare_image(photo_like(d)),
}


@pytest.fixture(scope="module")
def distorted(test_digits) -> dict[str, np.ndarray]:
    """Each distortion of the first SAMPLES test digits, preprocessed: uint8 [SAMPLES, 28, 28]."""
    digits = test_digits[0][:SAMPLES]
    return {name: np.stack([distort(d) for d in digits]) for name, distort in DISTORTIONS.items()}


def test_canonical_mnist_digits_pass_through_nearly_unchanged(test_digits):
    images = test_digits[0][:200]
    out = np.stack([to_mnist(d) for d in images])
    assert out.dtype == np.uint8 and out.shape == images.shape
    assert np.abs(out.astype(int) - images.astype(int)).mean() < 1.0  # grey levels, out of 255
    assert min(blurred_correlation(o, d) for o, d in zip(out, images, strict=True)) > 0.99


@pytest.mark.parametrize("name", sorted(DISTORTIONS))
def test_distorted_digits_come_back_close_to_their_canonical_form(test_digits, distorted, name):
    images = test_digits[0][:SAMPLES]
    out = distorted[name]
    scores = [blurred_correlation(o, d) for o, d in zip(out, images, strict=True)]
    assert np.median(scores) > 0.9, f"{name}: median similarity {np.median(scores):.3f}"
    assert np.min(scores) > 0.6, f"{name}: worst similarity {np.min(scores):.3f}"
    for o in out:  # MNIST geometry: ink within a 20 px box, centre of mass at the centre
        rows, cols = np.nonzero(o)
        assert max(np.ptp(rows), np.ptp(cols)) + 1 <= DIGIT_BOX + 2
        ys, xs = np.mgrid[:IMAGE_SIZE, :IMAGE_SIZE]
        mass = o.sum()
        assert abs((o * ys).sum() / mass - IMAGE_SIZE / 2) < 1.0
        assert abs((o * xs).sum() / mass - IMAGE_SIZE / 2) < 1.0


def test_distorted_digits_are_classified_like_the_originals(served_model, test_digits, distorted):
    images = test_digits[0][:SAMPLES]
    with connect(ClientConfig(served_model.grpc_target, protocol="grpc")) as model:
        original = model.predict(images).classes
        for name, out in distorted.items():
            classes = model.predict(out).classes
            agreement = np.mean(classes == original)
            assert agreement >= 0.9, f"{name}: only {agreement:.0%} classified as the original"


def test_transparent_canvas_strokes_are_read_either_colour(test_digits):
    digit = scaled_up(test_digits[0][0])
    alpha = digit  # strokes opaque, background fully transparent
    for ink in (0, 255):  # black strokes and white strokes on a transparent canvas
        rgba = np.dstack([np.full_like(digit, ink)] * 3 + [alpha])
        out = prepare_image(png(rgba, "RGBA"))
        assert blurred_correlation(out, test_digits[0][0]) > 0.9


@pytest.mark.parametrize("side", [150, 1200])  # below and above WORK_SIDE, where it is shrunk first
def test_16_bit_greyscale_is_read_at_any_size(test_digits, side):
    digit = test_digits[0][0]
    paper = np.asarray(Image.fromarray(255 - digit).resize((side, side), Image.Resampling.BILINEAR))
    out = prepare_image(png(paper.astype(np.uint16) * 257))  # Pillow reads it as mode I;16
    assert blurred_correlation(out, digit) > 0.9


@pytest.mark.parametrize("paper, ink", [(255, 0), (0, 255)], ids=["dark on light", "light on dark"])
def test_a_thin_small_digit_on_a_large_canvas_is_found(paper, ink):
    """A one drawn with a 2 px pen on a 512x512 canvas: ink on under 0.1% of the pixels."""
    canvas = np.full((512, 512), paper, np.uint8)
    canvas[200:260, 255:257] = ink
    out = prepare_image(png(canvas))
    rows, cols = np.nonzero(out > 128)
    assert np.ptp(rows) + 1 == DIGIT_BOX and np.ptp(cols) + 1 <= 2  # an upright stroke, 20 px tall


STORED_SIDEWAYS = {3: Image.Transpose.ROTATE_180, 6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270}


@pytest.mark.parametrize("orientation", sorted(STORED_SIDEWAYS))
def test_a_photo_stored_sideways_is_turned_upright_by_its_exif_orientation(test_digits, orientation):
    digit = test_digits[0][0]
    exif = Image.Exif()
    exif[0x0112] = orientation  # Orientation: how a viewer turns the stored pixels to show them
    stored = Image.fromarray(255 - scaled_up(digit)).convert("RGB").transpose(STORED_SIDEWAYS[orientation])
    out = io.BytesIO()
    stored.save(out, "JPEG", quality=90, exif=exif.tobytes())
    assert blurred_correlation(prepare_image(out.getvalue()), digit) > 0.8  # 0.1 to 0.3 when left sideways


def test_a_damaged_exif_block_is_ignored(test_digits):
    digit = test_digits[0][0]
    out = io.BytesIO()
    Image.fromarray(255 - scaled_up(digit)).save(out, "PNG", exif=b"Exif\x00\x00MM\x00*")
    assert blurred_correlation(prepare_image(out.getvalue()), digit) > 0.9


def test_transparent_margins_around_an_opaque_picture_take_the_paper_colour(test_digits):
    """A screenshot or cut-out: white paper with a dark digit, framed by fully transparent pixels."""
    digit = test_digits[0][1]
    alpha = np.zeros((150, 150), np.uint8)
    alpha[15:-15, 15:-15] = 255
    paper = 255 - scaled_up(digit)
    out = prepare_image(png(np.dstack([paper, paper, paper, alpha]), "RGBA"))
    assert blurred_correlation(out, digit) > 0.9


@pytest.mark.parametrize(
    "data, error, words",
    [
        (b"", BadImage, "empty"),
        (b"definitely not a picture", BadImage, "not an image"),
        ("ünïcödé ✓ garbage".encode(), BadImage, "not an image"),
        (png(np.random.default_rng(0).integers(0, 256, (64, 64), np.uint8))[:800], BadImage, "truncated"),
        (png(np.full((30, 30), 200, np.uint8)), BadImage, "blank"),
    ],
    ids=["empty", "text", "unicode", "truncated_png", "blank"],
)
def test_unusable_pictures_raise_clear_errors(data, error, words):
    with pytest.raises(error, match=words):
        prepare_image(data)


@pytest.mark.parametrize("data", [b"", b"definitely not a picture"], ids=["empty", "text"])
def test_the_errors_name_exactly_the_formats_that_decode(data):
    for image_format in ACCEPTED_FORMATS:  # each one named is really taken
        out = io.BytesIO()
        Image.fromarray(np.full((8, 8), 200, np.uint8)).save(out, image_format)
        assert decode_image(out.getvalue()).shape == (8, 8), image_format
    with pytest.raises(BadImage) as refused:
        decode_image(data)
    assert all(image_format in str(refused.value) for image_format in ACCEPTED_FORMATS), refused.value


def test_dimensions_are_checked_from_the_header_before_decoding():
    # A 6000x6000 PNG of zeros compresses to a few kB: a decompression bomb for a small limit.
    bomb = png(np.zeros((6000, 6000), np.uint8))
    assert len(bomb) < 100_000
    with pytest.raises(ImageTooLarge, match="6000x6000"):
        decode_image(bomb, ImageLimits(max_pixels=1_000_000, max_side=8192))
    with pytest.raises(ImageTooLarge, match="limit"):
        decode_image(png(np.zeros((10, 5000), np.uint8)), ImageLimits(max_pixels=10**8, max_side=4096))
