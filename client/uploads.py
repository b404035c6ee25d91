"""Read the digit images out of a gateway request: multipart files, a raw image body, or JSON.

JSON forms: {"pixels": [[...]]}, {"b64": "<base64 image file>"}, or a bare [[...]] pixel array;
for batches {"images": [item, ...]} or a bare list of items. A 28x28 pixel array is taken as an
MNIST-format image (ink bright on black) unless "preprocess": true; any other size is preprocessed.
"""

from __future__ import annotations

import base64
import binascii
import json

import numpy as np
from flask import Request

from client import contract
from client.preprocess import BadImage, ImageLimits, pixels_to_grey, prepare_image, to_mnist


def read_images(request: Request, limits: ImageLimits, max_images: int, batch: bool) -> np.ndarray:
    """The request's images as model input, uint8 [N, 28, 28] (N == 1 unless `batch`)."""
    mimetype = request.mimetype or ""
    if mimetype.startswith("multipart/"):
        files = _multipart_files(request)
        _check_count(len(files), max_images, batch)  # before decoding any of them
        images = [prepare_image(data, limits) for data in files]
    elif mimetype == "application/json" or mimetype.endswith("+json"):
        images = _json_images(_body(request), limits, batch, max_images)
    else:
        images = [prepare_image(_body(request), limits)]
    _check_count(len(images), max_images, batch)
    return np.stack(images)


def _check_count(count: int, max_images: int, batch: bool) -> None:
    if not count:
        raise BadImage("no image in the request")
    if not batch and count > 1:
        raise BadImage("send one image to /v1/predict; use /v1/predict/batch for several")
    if count > max_images:
        raise BadImage(f"too many images in one request (limit {max_images})")


def _body(request: Request) -> bytes:
    """The raw body; a chunked body (no Content-Length) over MAX_CONTENT_LENGTH raises 413, not truncates."""
    data = request.get_data(cache=False)
    if request.content_length is None:
        request.stream.read(1)  # Werkzeug stops quietly at the limit; reading past it raises 413
    return data


def _multipart_files(request: Request) -> list[bytes]:
    files = [f for name in request.files for f in request.files.getlist(name)]
    if not files:
        raise BadImage(
            "multipart upload has no file: send the image in a file field, e.g. -F image=@digit.png"
        )
    return [f.read() for f in files]


def _json_images(body: bytes, limits: ImageLimits, batch: bool, max_images: int) -> list[np.ndarray]:
    if not body.strip():
        raise BadImage("empty input: send an image, or JSON with 'pixels' or 'b64'")
    try:
        document = json.loads(body.decode("utf-8"))
    except UnicodeDecodeError:
        raise BadImage("body is not UTF-8 text, so not JSON; send images as multipart or raw bytes") from None
    except json.JSONDecodeError as err:
        raise BadImage(f"body is not valid JSON: {err.msg} at line {err.lineno} column {err.colno}") from None
    except RecursionError:
        raise BadImage("body is not usable JSON: it nests too deeply") from None
    except ValueError as err:  # e.g. an integer literal over Python's 4300-digit conversion limit
        raise BadImage(f"body is not usable JSON: {str(err)[:200]}") from None
    preprocess = isinstance(document, dict) and document.get("preprocess") is True
    if batch:
        items = document.get("images") if isinstance(document, dict) else document
        if not isinstance(items, list):
            raise BadImage('batch JSON must be {"images": [...]} or a list of images')
        if len(items) > max_images:
            raise BadImage(f"too many images in one request (limit {max_images})")
        return [_json_item(item, limits, preprocess, f"images[{i}]") for i, item in enumerate(items)]
    return [_json_item(document, limits, preprocess, "body")]


def _json_item(item: object, limits: ImageLimits, preprocess: bool, where: str) -> np.ndarray:
    """One JSON image: a pixel array, {"pixels": ...} or {"b64": ...}."""
    if isinstance(item, dict):
        if "b64" in item and "pixels" in item:
            raise BadImage(f"{where}: send either 'pixels' or 'b64', not both")
        if "b64" in item:
            return prepare_image(_b64_bytes(item["b64"], where), limits)
        if "pixels" in item:
            item = item["pixels"]
        else:
            raise BadImage(
                f"{where}: expected a 'pixels' array or a 'b64' image, got keys {sorted(item)[:5]}"
            )
    if not isinstance(item, list):
        raise BadImage(f"{where}: expected a 2-D array of pixel values, got {type(item).__name__}")
    try:
        grey = pixels_to_grey(item, limits)
    except BadImage as err:
        raise type(err)(f"{where}: {err}") from None
    mnist_shape = (contract.IMAGE_SIZE, contract.IMAGE_SIZE)
    return grey if grey.shape == mnist_shape and not preprocess else to_mnist(grey)


def _b64_bytes(value: object, where: str) -> bytes:
    if not isinstance(value, str):
        raise BadImage(f"{where}: 'b64' must be a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise BadImage(f"{where}: 'b64' is not valid base64") from None
