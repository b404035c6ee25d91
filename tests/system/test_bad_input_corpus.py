"""One corpus of bad requests across digits-serve's REST and gRPC APIs and the gateway, all as processes.

Every row must get a clear client error (HTTP 4xx with a JSON {"error": ...}, or a gRPC
INVALID_ARGUMENT / NOT_FOUND / FAILED_PRECONDITION) whose message says what was wrong, within
ANSWER_WITHIN_S, and the same server must answer a good request correctly right afterwards.
tests/serving and tests/client test each API's messages in depth; this table is the scan-able whole.
"""

from __future__ import annotations

import gzip
import json
import socket
import sys
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
import requests
from image_payloads import encode, png_claiming
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from client.contract import DEFAULT_MODEL_NAME, IMAGE_SIZE, INPUT_NAME, OUTPUT_CLASSES
from client.grpc_transport import ndarray_to_proto, proto_to_ndarray

MAX_BATCH = 64  # the test server's max_batch_size: a batch of 65 is over the limit
REST_BODY_LIMIT = 1_000_000  # --rest_api_max_body_bytes of the test server
GATEWAY_BODY_LIMIT = 2_000_000
GATEWAY_MAX_IMAGES = 16
ANSWER_WITHIN_S = 5.0  # generous: the machine is shared; a hang or a slow crash path is what this catches
MODEL = DEFAULT_MODEL_NAME
PREDICT = f"/v1/models/{MODEL}:predict"
ZEROS = np.zeros((IMAGE_SIZE, IMAGE_SIZE), np.uint8)
GOOD_ROW = ZEROS.tolist()
NOISE = np.random.default_rng(7).integers(0, 256, (96, 96), dtype=np.uint8)
GARBAGE = "☃ ünïcødé ✓ 𝔊 \u202e\u0000 ﷽".encode()


def pixels_json(token: str) -> bytes:
    """A row-format body whose every pixel is the JSON literal `token` (NaN, Infinity...)."""
    row = "[" + ",".join([token] * IMAGE_SIZE) + "]"
    return ('{"instances": [[' + ",".join([row] * IMAGE_SIZE) + "]]}").encode()


def tensor(
    array: np.ndarray | None = None,
    dtype: int = types_pb2.DT_UINT8,
    shape=None,
    content: bytes | None = None,
    int_val: tuple[int, ...] = (),
) -> tensor_pb2.TensorProto:
    """A TensorProto from an array, or hand-made (dtype, shape, raw content or int_val) for malformed ones."""
    if array is not None:
        return ndarray_to_proto(array)
    dims = [tensor_shape_pb2.TensorShapeProto.Dim(size=s) for s in shape]
    return tensor_pb2.TensorProto(
        dtype=dtype,
        tensor_shape=tensor_shape_pb2.TensorShapeProto(dim=dims),
        tensor_content=content or b"",
        int_val=int_val,
    )


def predict_request(
    inputs: dict | None = None,
    *,
    name: str = MODEL,
    version: int | None = None,
    label: str | None = None,
    signature: str = "",
) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    if version is not None:
        request.model_spec.version.value = version
    if label is not None:
        request.model_spec.version_label = label
    if signature:
        request.model_spec.signature_name = signature
    for alias, value in (inputs if inputs is not None else {INPUT_NAME: tensor(ZEROS[None])}).items():
        request.inputs[alias].CopyFrom(value)
    return request


def rest(path: str, body, headers: dict | None = None, method: str = "POST") -> dict:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return {"method": method, "path": path, "data": data, "headers": headers or {}}


def raw(data: bytes) -> dict:
    """Bytes written straight to the socket (protocol-level garbage)."""
    return {"raw": data}


def rpc(method: str, request) -> dict:
    return {"rpc": method, "request": request}


RAW_IMAGE = {"Content-Type": "image/png"}
JSON_BODY = {"Content-Type": "application/json"}

# (case, where, request, expected HTTP status or gRPC code, words the error message must contain)
CORPUS = [
    # --- digits-serve REST (TF Serving's API) --------------------------------------------------------
    ("malformed JSON", "rest", rest(PREDICT, b'{"instances": [[1,'), 400, "JSON Parse error"),
    ("truncated JSON body", "rest", rest(PREDICT, json.dumps({"instances": [GOOD_ROW]}).encode()[:900]), 400,
     "JSON Parse error"),
    ("empty body", "rest", rest(PREDICT, b""), 400, "empty"),
    ("wrong key", "rest", rest(PREDICT, {"images": [GOOD_ROW]}), 400, "Missing 'inputs' or 'instances' key"),
    ("both keys", "rest", rest(PREDICT, {"instances": [GOOD_ROW], "inputs": [GOOD_ROW]}), 400,
     "only one of 'inputs' or 'instances'"),
    ("ragged array", "rest", rest(PREDICT, {"instances": [GOOD_ROW, GOOD_ROW[:-1]]}), 400, "Expecting shape"),
    ("wrong shape", "rest", rest(PREDICT, {"instances": [[r[:-1] for r in GOOD_ROW]]}), 400, "[-1,28,28]"),
    ("wrong dtype: strings", "rest", rest(PREDICT, {"instances": [[["a"] * 28] * 28]}), 400,
     "is not of expected type: uint8"),
    ("wrong dtype: fractions", "rest", rest(PREDICT, {"instances": [[[0.5] * 28] * 28]}), 400,
     "is not of expected type: uint8"),
    ("NaN pixels", "rest", rest(PREDICT, pixels_json("NaN")), 400, "is not of expected type: uint8"),
    ("Infinity pixels", "rest", rest(PREDICT, pixels_json("Infinity")), 400,
     "is not of expected type: uint8"),
    ("empty batch", "rest", rest(PREDICT, {"instances": []}), 400, "No values in 'instances' array"),
    ("batch over max_batch_size", "rest", rest(PREDICT, {"instances": [GOOD_ROW] * (MAX_BATCH + 1)}), 400,
     f"larger than maximum input batch size {MAX_BATCH}"),
    ("body over the size limit", "rest", rest(PREDICT, b" " * (REST_BODY_LIMIT + 1)), 413, "over the limit"),
    ("gzip bomb", "rest", rest(PREDICT, gzip.compress(b" " * (20 * REST_BODY_LIMIT)),
                               {"Content-Encoding": "gzip"}), 413, "over the limit"),
    ("unknown model", "rest", rest("/v1/models/nope:predict", {"instances": [GOOD_ROW]}), 404,
     "Servable not found for request: Latest(nope)"),
    ("unknown version", "rest", rest(f"/v1/models/{MODEL}/versions/99:predict", {"instances": [GOOD_ROW]}),
     404, f"Specific({MODEL}, 99)"),
    ("unknown label", "rest", rest(f"/v1/models/{MODEL}/labels/beta:predict", {"instances": [GOOD_ROW]}), 400,
     "Unrecognized servable version label: beta"),
    ("unknown signature", "rest", rest(PREDICT, {"signature_name": "nope", "instances": [GOOD_ROW]}), 400,
     '"nope" not found'),
    ("unicode garbage body", "rest", rest(PREDICT, GARBAGE), 400, "JSON Parse error"),
    ("unicode garbage key", "rest", rest(PREDICT, {"☃\u202e": [GOOD_ROW]}), 400,
     "Missing 'inputs' or 'instances'"),
    ("unknown model status", "rest", rest("/v1/models/nope", None, method="GET"), 404,
     "Could not find any versions of model nope"),
    ("bad request line", "rest", raw(b"\x16\x03\x01 garbage\r\n\r\n"), 400, ""),
    ("bad Content-Length", "rest", raw(b"POST " + PREDICT.encode() + b" HTTP/1.1\r\nHost: x\r\n"
                                        b"Content-Length: -5\r\n\r\n"), 400, "Content-Length"),
    # --- digits-serve gRPC (official stubs) ----------------------------------------------------------
    ("unknown model", "grpc", rpc("Predict", predict_request(name="nope")), "NOT_FOUND",
     "Servable not found for request: Latest(nope)"),
    ("unknown version", "grpc", rpc("Predict", predict_request(version=99)), "NOT_FOUND",
     f"Specific({MODEL}, 99)"),
    ("unknown label", "grpc", rpc("Predict", predict_request(label="beta")), "INVALID_ARGUMENT",
     "Unrecognized servable version label: beta"),
    ("unknown signature", "grpc", rpc("Predict", predict_request(signature="nope")), "FAILED_PRECONDITION",
     'Serving signature key "nope" not found'),
    ("missing input", "grpc", rpc("Predict", predict_request({})), "INVALID_ARGUMENT",
     "Missing but required: {images}"),
    ("wrong input name", "grpc", rpc("Predict", predict_request({"pixels": tensor(ZEROS[None])})),
     "INVALID_ARGUMENT", "Sent extra: {pixels}"),
    ("wrong dtype", "grpc", rpc("Predict", predict_request({INPUT_NAME: tensor(ZEROS[None].astype("f4"))})),
     "INVALID_ARGUMENT", "to be uint8 but float is provided"),
    ("NaN floats", "grpc", rpc("Predict", predict_request({INPUT_NAME: tensor(np.full((1, 28, 28), np.nan,
                                                                                       np.float32))})),
     "INVALID_ARGUMENT", "to be uint8"),
    ("wrong shape", "grpc", rpc("Predict", predict_request({INPUT_NAME: tensor(ZEROS[None, :, :-1])})),
     "INVALID_ARGUMENT", "has shape [1,28,27]"),
    ("no batch dimension", "grpc", rpc("Predict", predict_request({INPUT_NAME: tensor(ZEROS)})),
     "INVALID_ARGUMENT", "has shape [28,28]"),
    ("truncated tensor_content", "grpc", rpc("Predict", predict_request(
        {INPUT_NAME: tensor(shape=(1, 28, 28), content=b"\0" * 100)})), "INVALID_ARGUMENT",
     "tensor_content has 100"),
    ("negative dimension", "grpc", rpc("Predict", predict_request(
        {INPUT_NAME: tensor(shape=(-1, 28, 28), content=b"\0" * 784)})), "INVALID_ARGUMENT",
     "negative dimension"),
    ("40 bytes asking for 10**7 images", "grpc", rpc("Predict", predict_request(
        {INPUT_NAME: tensor(shape=(10**7, 28, 28), int_val=(0,))})), "INVALID_ARGUMENT", "carries 1 values"),
    ("batch over max_batch_size", "grpc", rpc("Predict", predict_request(
        {INPUT_NAME: tensor(np.zeros((MAX_BATCH + 1, 28, 28), np.uint8))})), "INVALID_ARGUMENT",
     f"larger than maximum input batch size {MAX_BATCH}"),
    ("metadata without a field", "grpc",
     rpc("GetModelMetadata", get_model_metadata_pb2.GetModelMetadataRequest(model_spec={"name": MODEL})),
     "INVALID_ARGUMENT", "must specify at least one metadata_field"),
    ("status of an unknown model", "grpc", rpc("GetModelStatus", get_model_status_pb2.GetModelStatusRequest(
        model_spec={"name": "nope"})), "NOT_FOUND", "Could not find any versions of model nope"),
    ("unicode garbage model name", "grpc", rpc("Predict", predict_request(name="☃\u202e\x00")), "NOT_FOUND",
     "Servable not found"),
    # --- the gateway (gunicorn, gRPC behind) ---------------------------------------------------------
    ("non-image upload", "gateway", rest("/v1/predict", b"hello, I am text", RAW_IMAGE), 400, "not an image"),
    ("truncated PNG", "gateway", rest("/v1/predict", encode(NOISE, "PNG")[:2000], RAW_IMAGE), 400,
     "truncated"),
    ("truncated JPEG", "gateway", rest("/v1/predict", encode(NOISE, "JPEG")[:1500], RAW_IMAGE), 400,
     "truncated"),
    ("decompression bomb", "gateway", rest("/v1/predict", encode(np.zeros((6000, 6000), np.uint8), "PNG"),
                                           RAW_IMAGE), 413, "6000x6000"),
    ("20000x20000 image", "gateway", rest("/v1/predict", png_claiming(20000, 20000), RAW_IMAGE), 413,
     "too many pixels"),
    ("unicode garbage upload", "gateway", rest("/v1/predict", GARBAGE, RAW_IMAGE), 400, "not an image"),
    ("malformed JSON", "gateway", rest("/v1/predict", b'{"pixels": [[1, 2', JSON_BODY), 400,
     "not valid JSON"),
    ("wrong key", "gateway", rest("/v1/predict", {"image": GOOD_ROW}, JSON_BODY), 400, "'pixels'"),
    ("ragged pixels", "gateway", rest("/v1/predict", {"pixels": [[0, 1, 2], [3, 4]]}, JSON_BODY), 400,
     "rectangular"),
    ("NaN pixels", "gateway", rest("/v1/predict", b'{"pixels": [[NaN, 1], [2, 3]]}', JSON_BODY), 400,
     "finite"),
    ("empty batch", "gateway", rest("/v1/predict/batch", {"images": []}, JSON_BODY), 400, "no image"),
    ("batch over the limit", "gateway", rest("/v1/predict/batch",
     {"images": [GOOD_ROW] * (GATEWAY_MAX_IMAGES + 1)},
                                             JSON_BODY), 400, f"limit {GATEWAY_MAX_IMAGES}"),
    ("body over the size limit", "gateway", rest("/v1/predict", b"\0" * (GATEWAY_BODY_LIMIT + 1),
     RAW_IMAGE), 413,
     "limit"),
]  # fmt: skip


@pytest.fixture(scope="module")
def model_server(tmp_path_factory, mnist_model_dir, bench_common):
    """`digits-serve` on free ports over the shared exported model, batching on, a 1 MB REST body limit."""
    work = tmp_path_factory.mktemp("system")
    batching = work / "batching.config"
    batching.write_text(
        f"max_batch_size {{ value: {MAX_BATCH} }}\nbatch_timeout_micros {{ value: 1000 }}\n"
        "max_enqueued_batches { value: 100 }\nnum_batch_threads { value: 2 }\n"
    )
    server = bench_common.ModelServerProcess(
        "digits-serve",
        mnist_model_dir,
        work / "logs",
        batching_file=batching,
        extra=[f"--rest_api_max_body_bytes={REST_BODY_LIMIT}"],
    )
    try:
        server.wait_ready(timeout_s=180)
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def gateway(model_server, bench_common, tmp_path_factory):
    """The gateway as shipped (gunicorn, gRPC to the model server); yields its base URL."""
    port = bench_common.free_port()
    env = {
        **bench_common.console_scripts_env(),
        "DIGITS_MODEL_SERVER": model_server.grpc_target,
        "DIGITS_PROTOCOL": "grpc",
        "DIGITS_MAX_CONTENT_LENGTH": str(GATEWAY_BODY_LIMIT),
        "DIGITS_MAX_BATCH_IMAGES": str(GATEWAY_MAX_IMAGES),
    }
    gunicorn = str(Path(sys.executable).parent / "gunicorn")
    proc = bench_common.Process(
        "gateway",
        [
            gunicorn,
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            "1",
            "--threads",
            "4",
            "client.gateway:create_app()",
        ],
        tmp_path_factory.mktemp("gateway-logs"),
        env=env,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        bench_common.wait_http_ok(f"{url}/readyz", proc, 120)
        yield url
    finally:
        proc.stop()


def test_the_corpus_is_big_and_covers_all_three_fronts():
    assert len(CORPUS) >= 40
    assert {where for _, where, *_ in CORPUS} == {"rest", "grpc", "gateway"}


@pytest.fixture(scope="module")
def stubs(model_server):
    channel = grpc.insecure_channel(model_server.grpc_target)
    yield {
        "Predict": prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict,
        "GetModelMetadata": prediction_service_pb2_grpc.PredictionServiceStub(channel).GetModelMetadata,
        "GetModelStatus": model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus,
    }
    channel.close()


def send_http(base_url: str, request: dict) -> tuple[int, str]:
    """(status, error message) of one HTTP request; the body must be a JSON object with an 'error'."""
    if "raw" in request:
        host, port = base_url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=ANSWER_WITHIN_S) as sock:
            sock.sendall(request["raw"])
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
        head, _, body = answer.partition(b"\r\n\r\n")
        status = int(head.split()[1])
    else:
        response = requests.request(
            request["method"],
            base_url + request["path"],
            data=request["data"],
            headers=request["headers"],
            timeout=ANSWER_WITHIN_S,
        )
        status, body = response.status_code, response.content
    document = json.loads(body)
    assert isinstance(document, dict) and isinstance(document.get("error"), str), body[:300]
    return status, document["error"]


@pytest.mark.parametrize(
    "case, where, request_, expected, words", CORPUS, ids=[f"{where}: {case}" for case, where, *_ in CORPUS]
)
def test_bad_request_gets_a_clear_error_and_the_server_keeps_serving(
    case, where, request_, expected, words, model_server, gateway, stubs, test_digits
):
    started = time.monotonic()
    if where == "grpc":
        with pytest.raises(grpc.RpcError) as raised:
            stubs[request_["rpc"]](request_["request"], timeout=ANSWER_WITHIN_S)
        status, message = raised.value.code().name, raised.value.details()
    else:
        status, message = send_http(gateway if where == "gateway" else model_server.rest_url, request_)
    elapsed = time.monotonic() - started
    assert (status, words in message) == (expected, True), f"{case}: got {status} {message!r}"
    assert "Traceback" not in message and len(message) < 2000
    assert elapsed < ANSWER_WITHIN_S
    assert_answers_right(where, model_server, gateway, stubs, test_digits)


def assert_answers_right(where: str, model_server, gateway: str, stubs, test_digits) -> None:
    """The front that just got the bad request still gives the in-process answers."""
    images, classes = test_digits
    if where == "grpc":
        response = stubs["Predict"](predict_request({INPUT_NAME: tensor(images)}), timeout=10)
        got = proto_to_ndarray(response.outputs[OUTPUT_CLASSES])
    elif where == "rest":
        response = requests.post(
            model_server.rest_url + PREDICT, json={"instances": images.tolist()}, timeout=10
        )
        got = np.array([p[OUTPUT_CLASSES] for p in response.json()["predictions"]])
    else:
        response = requests.post(gateway + "/v1/predict/batch", json={"images": images.tolist()}, timeout=10)
        got = np.array([p["digit"] for p in response.json()["predictions"]])
    assert response is not None
    np.testing.assert_array_equal(got, classes)
