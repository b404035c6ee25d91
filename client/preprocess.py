"""Turn a real picture of a digit into what the model expects, the way MNIST itself was made.

decode_image: bytes -> grey uint8 [H, W] (size limits checked before decoding, EXIF upright, alpha flattened)
to_mnist:     grey [H, W] -> uint8 [28, 28]: ink bright on black, longest side 20 px, centre of mass centred
"""

from __future__ import annotations

import io
import itertools
import struct
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, ImageSequence, UnidentifiedImageError

from client import contract

ACCEPTED_FORMATS = ("PNG", "JPEG", "BMP", "GIF", "WEBP")
FORMATS_TEXT = f"{', '.join(ACCEPTED_FORMATS[:-1])} or {ACCEPTED_FORMATS[-1]}"  # for messages
WORK_SIDE = 512  # larger pictures are shrunk to this first: the result is 20 px wide anyway
BORDER_SAMPLES = 2_000  # border pixels used to fit the paper's lighting
JSON_TYPE_NAMES = {str: "strings", bool: "booleans", type(None): "null", dict: "objects"}
MIN_CONTRAST = 24  # grey levels between background and ink below which we call the picture blank
FRAME_CENTRE = contract.IMAGE_SIZE / 2  # MNIST test digits' mean centre of mass, in pixel indices: 14.0


class BadImage(ValueError):
    """The upload is not a usable picture of a digit; the message says why."""

    http_status = 400


class ImageTooLarge(BadImage):
    """The picture's dimensions exceed the configured limits (checked before decoding)."""

    http_status = 413


@dataclass(frozen=True)
class ImageLimits:
    """What an uploaded picture may be."""

    max_pixels: int = 16_000_000
    max_side: int = 8_192


def decode_image(data: bytes, limits: ImageLimits = ImageLimits()) -> np.ndarray:
    """Decode PNG/JPEG/BMP/GIF/WEBP bytes to grey uint8 [H, W], refusing oversized or broken files."""
    if not data:
        raise BadImage(f"empty input: send an image file ({FORMATS_TEXT})")
    try:
        with Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS) as image:
            width, height = image.size  # from the header: nothing is decompressed yet
            _check_size(width, height, limits)
            frame = next(ImageSequence.Iterator(image))  # first frame of an animation
            frame.draft("L", (WORK_SIDE, WORK_SIDE))  # JPEG decodes straight to a smaller scale
            frame.load()
            return _to_grey(_shrink(_upright(frame)))
    except BadImage:
        raise
    except UnidentifiedImageError:
        raise BadImage(f"not an image: send a {FORMATS_TEXT} file") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        # Pillow's guard fired while reading the header: its message gives the pixel count.
        raise ImageTooLarge(f"image has too many pixels: {_first_line(err)}") from None
    except (OSError, SyntaxError, ValueError, EOFError, StopIteration) as err:
        raise BadImage(f"image data is truncated or corrupt ({_first_line(err)})") from None


def pixels_to_grey(pixels: object, limits: ImageLimits = ImageLimits()) -> np.ndarray:
    """Validate a nested list of pixel values 0..255 ([H][W]) and return it as uint8 [H, W]."""
    _check_numbers(pixels)
    try:
        array = np.asarray(pixels, dtype=np.float64)
    except (ValueError, TypeError):
        raise BadImage("pixels must be a rectangular 2-D array of numbers (rows of equal length)") from None
    except OverflowError:  # an integer too large for a float, e.g. 1e400 written out in full
        raise BadImage(f"pixel values must lie in 0..{contract.PIXEL_MAX}") from None
    if array.ndim != 2 or 0 in array.shape:
        raise BadImage(f"pixels must be a non-empty 2-D array [height][width], got shape {list(array.shape)}")
    _check_size(array.shape[1], array.shape[0], limits)
    if not np.all(np.isfinite(array)):
        raise BadImage("pixels must be finite numbers (no NaN or Infinity)")
    if array.min() < 0 or array.max() > contract.PIXEL_MAX:
        raise BadImage(f"pixel values must lie in 0..{contract.PIXEL_MAX}")
    return np.rint(array).astype(np.uint8)


def _check_numbers(pixels: object) -> None:
    """Refuse values that are not numbers, which numpy would take: "7" as 7, true as 1, null as NaN."""
    if not isinstance(pixels, list):
        return
    rows = (row for row in pixels if isinstance(row, list))  # other shapes are refused after this
    kinds = set(map(type, itertools.chain.from_iterable(rows))) - {int, float, list}
    if kinds:
        found = sorted(JSON_TYPE_NAMES.get(kind, kind.__name__) for kind in kinds)
        raise BadImage(f"pixel values must be numbers 0..{contract.PIXEL_MAX}, not {' or '.join(found)}")


def to_mnist(grey: np.ndarray) -> np.ndarray:
    """MNIST-style uint8 [28, 28]: ink bright on black, cropped, 20 px box, centre of mass centred."""
    ink = _ink_map(np.asarray(grey, dtype=np.float32))
    top, bottom, left, right = _ink_bounds(ink)
    box = _fit_box(ink[top:bottom, left:right], contract.DIGIT_BOX)
    return _paste_centred(box, contract.IMAGE_SIZE)


def prepare_image(data: bytes, limits: ImageLimits = ImageLimits()) -> np.ndarray:
    """Bytes of a picture -> the model's uint8 [28, 28] input."""
    return to_mnist(decode_image(data, limits))


def _check_size(width: int, height: int, limits: ImageLimits) -> None:
    if width < 1 or height < 1:
        raise BadImage(f"image has no pixels ({width}x{height})")
    if width > limits.max_side or height > limits.max_side or width * height > limits.max_pixels:
        raise ImageTooLarge(
            f"image is {width}x{height}; the limit is {limits.max_side} px a side "
            f"and {limits.max_pixels} pixels in all"
        )


def _upright(image: Image.Image) -> Image.Image:
    """The picture the way it is shown: phone cameras store photos sideways and say so in EXIF."""
    try:
        ImageOps.exif_transpose(image, in_place=True)
    except (OSError, SyntaxError, ValueError, struct.error):  # a damaged EXIF block: the pixels as stored
        pass
    return image


def _shrink(image: Image.Image) -> Image.Image:
    if max(image.size) <= WORK_SIDE:
        return image
    if image.mode.startswith("I;16"):
        image = image.convert("I")  # 16-bit grey resized as integers: converting to RGB would clip it at 255
    elif image.mode not in ("L", "LA", "RGB", "RGBA", "I", "F"):
        image = image.convert("RGBA" if "A" in image.getbands() or "transparency" in image.info else "RGB")
    image = image.copy()
    image.thumbnail((WORK_SIDE, WORK_SIDE), Image.Resampling.BOX)
    return image


def _to_grey(image: Image.Image) -> np.ndarray:
    """Grey uint8 [H, W]; transparent parts become the colour that contrasts with the ink."""
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        values = np.asarray(image, dtype=np.float64)
        top = 65535.0 if values.max() > contract.PIXEL_MAX else float(contract.PIXEL_MAX)
        return np.rint(np.clip(values / top, 0, 1) * contract.PIXEL_MAX).astype(np.uint8)
    has_alpha = "A" in image.getbands() or "transparency" in image.info
    if not has_alpha:
        return np.asarray(image.convert("L"), dtype=np.uint8)
    rgba = image.convert("LA")
    luminance = np.asarray(rgba.getchannel("L"), dtype=np.float64)
    alpha = np.asarray(rgba.getchannel("A"), dtype=np.float64) / contract.PIXEL_MAX
    if alpha.sum() == 0:
        raise BadImage("no digit found: the image is fully transparent")
    if alpha.mean() > 0.5:  # mostly opaque: a picture with transparent margins, which take its paper's colour
        paper = float(np.median(luminance[alpha > 0.5]))
    else:  # strokes drawn on a transparent canvas: dark strokes go onto white paper, light strokes onto black
        paper = 0.0 if (luminance * alpha).sum() / alpha.sum() > 127 else float(contract.PIXEL_MAX)
    return np.rint(luminance * alpha + paper * (1 - alpha)).astype(np.uint8)


def _otsu_threshold(values: np.ndarray) -> float:
    """Grey level that best splits `values` into two classes (Otsu's method on a 256-bin histogram)."""
    hist = np.bincount(np.clip(values, 0, 255).astype(np.int64).ravel(), minlength=256).astype(np.float64)
    levels = np.arange(256, dtype=np.float64)
    weight = np.cumsum(hist)
    mass = np.cumsum(hist * levels)
    total_weight, total_mass = weight[-1], mass[-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        mean_low = mass / weight
        mean_high = (total_mass - mass) / (total_weight - weight)
        between = weight * (total_weight - weight) * (mean_low - mean_high) ** 2
    return float(np.nanargmax(np.nan_to_num(between, nan=-1.0)))


def _ink_map(grey: np.ndarray) -> np.ndarray:
    """Float [H, W] in 0..1: 0 for paper, 1 for solid ink, whatever the colours and lighting."""
    paper, noise = _paper_surface(grey)
    residual = grey - paper  # ink stands out from the (possibly unevenly lit) paper, in either direction
    low, high = np.percentile(residual, [0.1, 99.9])
    if max(high, -low) < MIN_CONTRAST:  # ink on under 0.1% of the picture: a thin digit on a large canvas
        low, high = residual.min(), residual.max()
    ink = residual if high >= -low else -residual
    threshold = _otsu_threshold(np.clip(ink, 0, contract.PIXEL_MAX))
    strokes = ink[ink > threshold]
    ink_level = float(np.percentile(strokes, 90)) if strokes.size else 0.0
    if ink_level < MIN_CONTRAST:
        raise BadImage("no digit found: the image is blank or has too little contrast")
    # Texture and sensor noise on the paper: drop what lies within 3 sigma of it (nothing on clean scans).
    floor = min(0.5, 3 * noise / ink_level)
    scaled = np.clip(ink / ink_level, 0, 1)
    return np.clip((scaled - floor) / (1 - floor), 0, 1)


def _paper_surface(grey: np.ndarray) -> tuple[np.ndarray, float]:
    """The paper's brightness [H, W] as a quadratic surface fitted to the border, and its noise sigma.

    Photos are unevenly lit; the border is paper in any picture of one digit, so a robust fit to it
    (ink touching the edge is rejected as outliers) predicts the paper under the digit.
    """
    h, w = grey.shape
    ys, xs = _border_coordinates(h, w, band=max(1, round(0.03 * min(h, w))))
    values = grey[ys, xs].astype(np.float64)
    if np.ptp(values) == 0:  # clean scans and drawings: flat paper, no noise
        return np.full((h, w), values[0], dtype=np.float32), 0.0
    design = np.stack(_quadratic_terms(ys / h - 0.5, xs / w - 0.5), axis=1)
    keep = np.ones(values.size, dtype=bool)
    for _ in range(3):
        coef = _least_squares(design[keep], values[keep])
        residual = values - design @ coef
        sigma = 1.4826 * float(np.median(np.abs(residual[keep])))
        keep = np.abs(residual) <= 3 * sigma + 1.0
    # Evaluated by broadcasting a column of y against a row of x: no [H*W, 6] matrix.
    terms = _quadratic_terms(np.arange(h)[:, None] / h - 0.5, np.arange(w)[None, :] / w - 0.5)
    surface = sum(c * t for c, t in zip(coef, terms, strict=True))
    return np.broadcast_to(surface, (h, w)).astype(np.float32), sigma


def _border_coordinates(h: int, w: int, band: int) -> tuple[np.ndarray, np.ndarray]:
    """Row and column indices of (at most about BORDER_SAMPLES) pixels within `band` of the edge."""
    band = min(band, h // 2 or 1, w // 2 or 1)
    rows = np.r_[0:band, h - band : h]
    cols = np.r_[0:band, w - band : w]
    middle = np.arange(band, h - band)
    ys = np.concatenate([np.repeat(rows, w), np.repeat(middle, cols.size)])
    xs = np.concatenate([np.tile(np.arange(w), rows.size), np.tile(cols, middle.size)])
    step = max(1, ys.size // BORDER_SAMPLES)
    return ys[::step], xs[::step]


def _least_squares(design: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Coefficients of the 6-term fit via the 6x6 normal equations.

    einsum keeps this off the multi-threaded BLAS path, which costs tens of ms on a busy machine
    for a 2000x6 problem that takes microseconds.
    """
    gram = np.einsum("ij,ik->jk", design, design) + 1e-9 * np.eye(design.shape[1])
    return np.linalg.solve(gram, np.einsum("ij,i->j", design, values))


def _quadratic_terms(y: np.ndarray, x: np.ndarray) -> list[np.ndarray]:
    return [np.ones_like(x * y), x, y, x * x, x * y, y * y]


def _ink_bounds(ink: np.ndarray) -> tuple[int, int, int, int]:
    """Bounding box (top, bottom, left, right; exclusive ends) of the digit's strokes and their soft edges.

    Found on the solid strokes first (so faint noise far away does not widen it), then widened by
    one output pixel's worth to keep the anti-aliased fringe MNIST's own 20 px boxes include.
    """
    rows, cols = np.nonzero(_drop_specks(ink >= 0.5))
    if rows.size == 0:
        raise BadImage("no digit found: the image is blank")
    margin = -(-max(np.ptp(rows), np.ptp(cols)) // contract.DIGIT_BOX) + 1
    top, left = max(0, rows.min() - margin), max(0, cols.min() - margin)
    bottom, right = rows.max() + margin + 1, cols.max() + margin + 1
    fringe_rows, fringe_cols = np.nonzero(ink[top:bottom, left:right] > 0)
    return (
        top + fringe_rows.min(),
        top + fringe_rows.max() + 1,
        left + fringe_cols.min(),
        left + fringe_cols.max() + 1,
    )


def _drop_specks(mask: np.ndarray) -> np.ndarray:
    """Keep ink pixels with at least two inked neighbours, so isolated noise does not widen the crop."""
    if mask.sum() < 64:  # a tiny drawing: every pixel counts
        return mask
    padded = np.pad(mask, 1).astype(np.uint8)
    h, w = mask.shape
    neighbours = sum(
        padded[1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w] for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx
    )
    return mask & (neighbours >= 2)


def _fit_box(crop: np.ndarray, box: int) -> np.ndarray:
    """Scale so the longest side is `box` px, keeping the aspect ratio (anti-aliased, as MNIST)."""
    h, w = crop.shape
    scale = box / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    resized = Image.fromarray(crop.astype(np.float32)).resize(size, Image.Resampling.LANCZOS)
    return np.clip(np.asarray(resized, dtype=np.float32), 0, 1)


def _paste_centred(box: np.ndarray, side: int) -> np.ndarray:
    """Place `box` in a side x side frame so its centre of mass sits at the frame's centre."""
    h, w = box.shape
    ys, xs = np.mgrid[:h, :w]
    mass = float(box.sum()) or 1.0
    com_y, com_x = float((box * ys).sum()) / mass, float((box * xs).sum()) / mass
    top = int(np.clip(round(FRAME_CENTRE - com_y), 0, side - h))
    left = int(np.clip(round(FRAME_CENTRE - com_x), 0, side - w))
    frame = np.zeros((side, side), dtype=np.float32)
    frame[top : top + h, left : left + w] = box
    return np.rint(frame * contract.PIXEL_MAX).astype(np.uint8)


def _first_line(err: BaseException) -> str:
    return (str(err).splitlines() or [type(err).__name__])[0][:200]
