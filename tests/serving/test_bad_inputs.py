"""A matrix of bad requests over REST and gRPC: each gets the right code and a helpful message, quickly,
and the server keeps answering correctly afterwards."""

from __future__ import annotations

import gzip
import json
import socket
import time

import grpc
import numpy as np
import pytest
import requests
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

from client.contract import IMAGE_SIZE, INPUT_NAME, OUTPUT_CLASSES
from serving.config_files import ConfigError, parse_model_server_config
from serving.errors import from_tf_error

IMG = np.zeros((1, IMAGE_SIZE, IMAGE_SIZE), np.uint8).tolist()
ROW = np.zeros((IMAGE_SIZE, IMAGE_SIZE), np.uint8).tolist()
PREDICT = "/v1/models/digits:predict"
ODD = "/v1/models/odd:predict"

# (name, method, path, body (bytes or JSON-able), extra headers, HTTP status, text the error must contain)
REST_CASES = [
    ("empty body", "POST", PREDICT, b"", {}, 400, "The document is empty"),
    ("truncated JSON", "POST", PREDICT, b'{"instances": [[1, 2', {}, 400, "JSON Parse error"),
    ("not JSON", "POST", PREDICT, b"instances=1", {}, 400, "JSON Parse error"),
    ("top level is a list", "POST", PREDICT, b"[1, 2]", {}, 400, "Is not object"),
    ("invalid UTF-8", "POST", PREDICT, b'{"instances": ["\xff\xfe"]}', {}, 400, "JSON Parse error"),
    (
        "deeply nested",
        "POST",
        PREDICT,
        b'{"instances": ' + b"[" * 100000 + b"]" * 100000 + b"}",
        {},
        400,
        "JSON Parse error",
    ),
    (
        "integer literal over 4300 digits",
        "POST",
        PREDICT,
        b'{"instances": [' + b"1" * 5000 + b"]}",
        {},
        400,
        "JSON Parse error: Number too big",
    ),
    (
        "instances 500 lists deep",
        "POST",
        PREDICT,
        b'{"instances": ' + b"[" * 500 + b"300" + b"]" * 500 + b"}",
        {},
        400,
        "a tensor has at most 64 dimensions",
    ),
    (
        "string input 65 lists deep",
        "POST",
        ODD,
        b'{"inputs": {"text": ' + b"[" * 65 + b'"a"' + b"]" * 65 + b', "values": [[1, 2, 3]]}}',
        {},
        400,
        "a tensor has at most 64 dimensions",
    ),
    ("no inputs key", "POST", PREDICT, {"instanses": IMG}, {}, 400, "Missing 'inputs' or 'instances' key"),
    (
        "both keys",
        "POST",
        PREDICT,
        {"instances": IMG, "inputs": IMG},
        {},
        400,
        "only one of 'inputs' or 'instances'",
    ),
    (
        "instances not a list",
        "POST",
        PREDICT,
        {"instances": 5},
        {},
        400,
        "Expecting 'instances' to be an list",
    ),
    ("empty batch", "POST", PREDICT, {"instances": []}, {}, 400, "No values in 'instances' array"),
    (
        "ragged rows",
        "POST",
        PREDICT,
        {"instances": [ROW, ROW[:-1]]},
        {},
        400,
        "Expecting shape [28,28] but got: [27,28]",
    ),
    (
        "wrong image size",
        "POST",
        PREDICT,
        {"instances": [[r[:-1] for r in ROW]]},
        {},
        400,
        "expects [-1,28,28]",
    ),
    ("flat pixels", "POST", PREDICT, {"instances": [[0] * 784]}, {}, 400, "has shape [1,784]"),
    (
        "string pixel",
        "POST",
        PREDICT,
        {"instances": [[["a"] * 28] * 28]},
        {},
        400,
        'JSON Value: "a" Type: String is not of expected type: uint8',
    ),
    (
        "fractional pixel",
        "POST",
        PREDICT,
        {"instances": [[[1.5] * 28] * 28]},
        {},
        400,
        "JSON Value: 1.5 Type: Number is not of expected type: uint8",
    ),
    ("pixel over 255", "POST", PREDICT, {"instances": [[[300] * 28] * 28]}, {}, 400, "out of range [0, 255]"),
    ("negative pixel", "POST", PREDICT, {"inputs": [[[-1] * 28] * 28]}, {}, 400, "out of range [0, 255]"),
    (
        "NaN pixel",
        "POST",
        PREDICT,
        b'{"instances": [[' + b",".join([b"[" + b",".join([b"NaN"] * 28) + b"]"] * 28) + b"]]}",
        {},
        400,
        "JSON Value: nan Type: Number is not of expected type: uint8",
    ),
    (
        "Infinity pixel",
        "POST",
        PREDICT,
        b'{"inputs": [' + b",".join([b"[" + b",".join([b"Infinity"] * 28) + b"]"] * 28) + b"]}",
        {},
        400,
        "is not of expected type: uint8",
    ),
    (
        "bool pixel",
        "POST",
        PREDICT,
        {"instances": [[[True] * 28] * 28]},
        {},
        400,
        "Type: Bool is not of expected",
    ),
    (
        "bool among pixels",
        "POST",
        PREDICT,
        {"instances": [[[1] * 27 + [True]] + ROW[1:]]},
        {},
        400,
        "JSON Value: true Type: Bool is not of expected type: uint8",
    ),
    (
        "bool among pixels in UTF-16",
        "POST",
        PREDICT,
        json.dumps({"instances": [[[1] * 27 + [True]] + ROW[1:]]}).encode("utf-16"),
        {},
        400,
        "JSON Value: true Type: Bool is not of expected type: uint8",
    ),
    (
        "bool among floats",
        "POST",
        ODD,
        {"instances": [{"text": "a", "values": [1.5, False, 2]}]},
        {},
        400,
        "JSON Value: false Type: Bool is not of expected type: float",
    ),
    (
        "huge integer",
        "POST",
        PREDICT,
        {"instances": [[[2**70] * 28] * 28]},
        {},
        400,
        "not of expected type: uint8",
    ),
    (
        "signature_name not a string",
        "POST",
        PREDICT,
        {"signature_name": 3, "instances": IMG},
        {},
        400,
        "'signature_name' key must be a string value.",
    ),
    (
        "unknown signature",
        "POST",
        PREDICT,
        {"signature_name": "nope", "instances": IMG},
        {},
        400,
        'Serving signature name: "nope" not found in signature def',
    ),
    (
        "unknown model",
        "POST",
        "/v1/models/nope:predict",
        {"instances": IMG},
        {},
        404,
        "Servable not found for request: Latest(nope)",
    ),
    (
        "unknown version",
        "POST",
        "/v1/models/digits/versions/99:predict",
        {"instances": IMG},
        {},
        404,
        "Servable not found for request: Specific(digits, 99)",
    ),
    (
        "unknown label",
        "POST",
        "/v1/models/digits/labels/beta:predict",
        {"instances": IMG},
        {},
        400,
        "Unrecognized servable version label: beta",
    ),
    (
        "version over int64",
        "POST",
        "/v1/models/digits/versions/99999999999999999999:predict",
        {"instances": IMG},
        {},
        400,
        "Failed to convert version: 99999999999999999999 to numeric.",
    ),
    (
        "version 2**63, one over int64",
        "POST",
        "/v1/models/digits/versions/9223372036854775808:predict",
        {"instances": IMG},
        {},
        400,
        "Failed to convert version: 9223372036854775808 to numeric.",
    ),
    (
        "version over 4300 digits",
        "GET",
        "/v1/models/digits/versions/" + "9" * 5000,
        None,
        {},
        400,
        "Failed to convert version: 9999",
    ),
    (
        "version 42 after 5000 leading zeros",
        "GET",
        "/v1/models/digits/versions/" + "0" * 5000 + "42",
        None,
        {},
        404,
        "Could not find version 42 of model digits",
    ),
    (
        "version over int64 after leading zeros",
        "POST",
        "/v1/models/digits/versions/000" + "9" * 20 + ":predict",
        {"instances": IMG},
        {},
        400,
        "Failed to convert version: 000" + "9" * 20 + " to numeric.",
    ),
    (
        "unknown model status",
        "GET",
        "/v1/models/nope",
        None,
        {},
        404,
        "Could not find any versions of model nope",
    ),
    (
        "unknown version status",
        "GET",
        "/v1/models/digits/versions/42",
        None,
        {},
        404,
        "Could not find version 42 of model digits",
    ),
    ("unknown model metadata", "GET", "/v1/models/nope/metadata", None, {}, 404, "Servable not found"),
    (
        "singular version in path",
        "POST",
        "/v1/models/digits/version/1:predict",
        {"instances": IMG},
        {},
        400,
        "Malformed request: POST /v1/models/digits/version/1:predict",
    ),
    ("GET on predict", "GET", PREDICT, None, {}, 400, "Malformed request: GET /v1/models/digits:predict"),
    ("POST without a model", "POST", "/v1/models", {}, {}, 400, "Malformed request: POST /v1/models"),
    ("unknown verb", "POST", "/v1/models/digits:explain", {}, {}, 400, "Malformed request"),
    ("text after the verb", "POST", PREDICT + "ion", {"instances": IMG}, {}, 400, "Malformed request"),
    ("path outside /v1", "GET", "/v3/anything", None, {}, 404, "Not found: /v3/anything"),
    ("body over the limit", "POST", PREDICT, b"[" * 2_500_000, {}, 413, "over the limit of 2000000 bytes"),
    (
        "gzip bomb",
        "POST",
        PREDICT,
        gzip.compress(b" " * 50_000_000),
        {"Content-Encoding": "gzip"},
        413,
        "Decompressed request body is over the limit",
    ),
    (
        "broken gzip",
        "POST",
        PREDICT,
        b"\x1f\x8bnot really gzip",
        {"Content-Encoding": "gzip"},
        400,
        "Failed to decompress gzip",
    ),
    (
        "unicode garbage key",
        "POST",
        PREDICT,
        {"ïnstäncés ☃": IMG},
        {},
        400,
        "Missing 'inputs' or 'instances'",
    ),
    (
        "plain list for two inputs",
        "POST",
        ODD,
        {"instances": ["a", "b"]},
        {},
        400,
        "expecting list of objects as multiple input tensors",
    ),
    (
        "missing named input in row",
        "POST",
        ODD,
        {"instances": [{"text": "a"}]},
        {},
        400,
        "does not have named input: values",
    ),
    (
        "extra named input in row",
        "POST",
        ODD,
        {"instances": [{"text": "a", "values": [1, 2, 3], "extra": 1}]},
        {},
        400,
        "keys must be equal to: text,values",
    ),
    (
        "missing named input in columns",
        "POST",
        ODD,
        {"inputs": {"text": ["a"]}},
        {},
        400,
        "Missing named input: values in 'inputs' object.",
    ),
    (
        "URL-safe base64",
        "POST",
        ODD,
        {"instances": [{"text": {"b64": "-_-_"}, "values": [1, 2, 3]}]},
        {},
        400,
        "Unable to base64 decode",
    ),
    (
        "b64 for a float input",
        "POST",
        ODD,
        {"instances": [{"text": "a", "values": {"b64": "AAAA"}}]},
        {},
        400,
        "is not of expected type: float",
    ),
    (
        "number for a string input",
        "POST",
        ODD,
        {"instances": [{"text": 5, "values": [1, 2, 3]}]},
        {},
        400,
        "is not of expected type: string",
    ),
    (
        "classify without examples",
        "POST",
        "/v1/models/estimator:classify",
        {"instances": [1]},
        {},
        400,
        "Missing 'examples' key",
    ),
    (
        "regress on a classify signature",
        "POST",
        "/v1/models/estimator:regress",
        {"examples": [{"x": 1.0}]},
        {},
        400,
        "Expected regression signature method_name to be tensorflow/serving/regress",
    ),
    (
        "bad example feature",
        "POST",
        "/v1/models/estimator:classify",
        {"examples": [{"x": [1, "a"]}]},
        {},
        400,
        "feature 'x' must be a number, a string",
    ),
    (
        "example integer over int64",
        "POST",
        "/v1/models/estimator:classify",
        {"examples": [{"x": 2**63}]},
        {},
        400,
        "feature 'x' has 9223372036854775808, out of the int64 range",
    ),
    (
        "example integer under int64",
        "POST",
        "/v1/models/estimator:regress",
        {"signature_name": "regress_x", "examples": [{"x": [1, -(2**63) - 1]}]},
        {},
        400,
        "out of the int64 range",
    ),
    (
        "example integer too large for a float",
        "POST",
        "/v1/models/estimator:classify",
        {"examples": [{"x": [1.5, 10**400]}]},
        {},
        400,
        "out of the float range",
    ),
]


@pytest.fixture(scope="module")
def http():
    session = requests.Session()
    yield session
    session.close()


def _assert_still_serving(http, rest_url, built_models):
    images = np.arange(2 * 28 * 28).reshape(2, 28, 28).astype(np.uint8)
    want = None
    import tensorflow as tf

    loaded = tf.saved_model.load(str(built_models.digits[2]))
    want = loaded.signatures["serving_default"](**{INPUT_NAME: tf.constant(images)})[OUTPUT_CLASSES].numpy()
    r = http.post(f"{rest_url}{PREDICT}", json={"instances": images.tolist()}, timeout=10)
    assert r.status_code == 200 and [p[OUTPUT_CLASSES] for p in r.json()["predictions"]] == want.tolist()


@pytest.mark.parametrize(
    "name, method, path, body, headers, status, message", REST_CASES, ids=[case[0] for case in REST_CASES]
)
def test_rest_bad_request(http, rest_url, name, method, path, body, headers, status, message):
    started = time.monotonic()
    kwargs = {"data": body} if isinstance(body, bytes) else ({"json": body} if body is not None else {})
    r = http.request(method, f"{rest_url}{path}", headers=headers, timeout=20, **kwargs)
    assert time.monotonic() - started < 5, "a bad request must be answered quickly"
    assert r.status_code == status, r.text
    assert r.headers["Content-Type"] == "application/json"
    assert message in r.json()["error"], r.json()["error"]


@pytest.mark.parametrize(
    "tf_error, code, status",
    [
        (tf.errors.InvalidArgumentError, grpc.StatusCode.INVALID_ARGUMENT, 400),
        (tf.errors.FailedPreconditionError, grpc.StatusCode.FAILED_PRECONDITION, 400),
        (tf.errors.DeadlineExceededError, grpc.StatusCode.DEADLINE_EXCEEDED, 504),
        (tf.errors.InternalError, grpc.StatusCode.INTERNAL, 500),
        (tf.errors.ResourceExhaustedError, grpc.StatusCode.RESOURCE_EXHAUSTED, 429),  # out of memory
        (tf.errors.OutOfRangeError, grpc.StatusCode.OUT_OF_RANGE, 400),
        (tf.errors.UnknownError, grpc.StatusCode.UNKNOWN, 500),
    ],
)
def test_a_model_runtime_error_keeps_its_code_and_tf_servings_http_status(tf_error, code, status):
    error = from_tf_error(tf_error(None, None, "Table not initialized.\n\t [[{{node lookup}}]]"))
    assert (error.code, error.http_status, error.message) == (code, status, "Table not initialized.")


def test_rest_still_serving_after_the_bad_requests(http, rest_url, built_models):
    for _, method, path, body, headers, _, _ in REST_CASES:  # all of them once more, on one connection
        kwargs = {"data": body} if isinstance(body, bytes) else ({"json": body} if body is not None else {})
        http.request(method, f"{rest_url}{path}", headers=headers, timeout=20, **kwargs)
    _assert_still_serving(http, rest_url, built_models)


def _request(images=None, name="digits", **spec):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    for key, value in spec.items():
        if key == "version":
            request.model_spec.version.value = value
        else:
            setattr(request.model_spec, key, value)
    if images is not None:
        request.inputs[INPUT_NAME].CopyFrom(tf.make_tensor_proto(images))
    return request


def _with_filter(request, *aliases):
    request.output_filter.extend(aliases)
    return request


def _with_input(request, alias, proto):
    request.inputs[alias].CopyFrom(proto)
    return request


GOOD = np.zeros((1, 28, 28), np.uint8)
SHORT_CONTENT = tensor_pb2.TensorProto(
    dtype=tf.uint8.as_datatype_enum,
    tensor_content=b"\x00" * 10,
    tensor_shape={"dim": [{"size": 1}, {"size": 28}, {"size": 28}]},
)
HUGE_DIMS = tensor_pb2.TensorProto(
    dtype=tf.uint8.as_datatype_enum,
    tensor_content=b"\x01",
    tensor_shape={"dim": [{"size": 7}, {"size": 7905747460161236407}]},  # the product wraps to 1 in int64
)
HUGE_PADDING = tensor_pb2.TensorProto(
    dtype=tf.uint8.as_datatype_enum,
    int_val=[1],
    tensor_shape={"dim": [{"size": 2**32}, {"size": 2**32}]},  # the product wraps to 0 in int64
)
GRPC_PREDICT_CASES = [
    ("unknown model", _request(GOOD, name="nope"), grpc.StatusCode.NOT_FOUND, "Latest(nope)"),
    ("unknown version", _request(GOOD, version=99), grpc.StatusCode.NOT_FOUND, "Specific(digits, 99)"),
    (
        "unknown label",
        _request(GOOD, version_label="beta"),
        grpc.StatusCode.INVALID_ARGUMENT,
        "Unrecognized servable version label: beta",
    ),
    (
        "unknown signature",
        _request(GOOD, signature_name="nope"),
        grpc.StatusCode.FAILED_PRECONDITION,
        'Serving signature key "nope" not found.',
    ),
    ("no model name", _request(GOOD, name=""), grpc.StatusCode.INVALID_ARGUMENT, "Missing ModelSpec name"),
    (
        "missing input",
        _request(None),
        grpc.StatusCode.INVALID_ARGUMENT,
        "input size does not match signature: 0!=1",
    ),
    (
        "extra input",
        _with_input(_request(GOOD), "bogus", tf.make_tensor_proto([1])),
        grpc.StatusCode.INVALID_ARGUMENT,
        "Sent extra: {bogus}",
    ),
    (
        "wrong dtype",
        _request(GOOD.astype(np.float32)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "to be uint8 but float is provided",
    ),
    (
        "wrong shape",
        _request(np.zeros((1, 28, 27), np.uint8)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "has shape [1,28,27] but the signature expects [-1,28,28]",
    ),
    (
        "no batch dimension",
        _request(np.zeros((28, 28), np.uint8)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "has shape [28,28]",
    ),
    (
        "unknown output alias",
        _with_filter(_request(GOOD), "logits"),
        grpc.StatusCode.INVALID_ARGUMENT,
        "output tensor alias not found in signature: logits",
    ),
    (
        "duplicate output alias",
        _with_filter(_request(GOOD), OUTPUT_CLASSES, OUTPUT_CLASSES),
        grpc.StatusCode.INVALID_ARGUMENT,
        "duplicate output tensor alias: classes",
    ),
    (
        "truncated tensor_content",
        _with_input(_request(None), INPUT_NAME, SHORT_CONTENT),
        grpc.StatusCode.INVALID_ARGUMENT,
        "tensor_content has 10 bytes",
    ),
    (
        "dimensions whose product overflows int64",
        _with_input(_request(None), INPUT_NAME, HUGE_DIMS),
        grpc.StatusCode.INVALID_ARGUMENT,
        "tensor_content has 1 bytes but shape [7, 7905747460161236407] of uint8 needs 55340232221128654849",
    ),
    (
        "padding whose element count overflows int64",
        _with_input(_request(None), INPUT_NAME, HUGE_PADDING),
        grpc.StatusCode.INVALID_ARGUMENT,
        "padding a tensor from its last value is limited",
    ),
    (
        "string into a float input",
        _with_input(
            _with_input(_request(None, name="odd"), "text", tf.make_tensor_proto([b"a"])),
            "values",
            tf.make_tensor_proto([b"x"]),
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "to be float but string is provided",
    ),
]


@pytest.fixture(scope="module")
def stubs(grpc_channel):
    return (
        prediction_service_pb2_grpc.PredictionServiceStub(grpc_channel),
        model_service_pb2_grpc.ModelServiceStub(grpc_channel),
    )


@pytest.mark.parametrize(
    "name, request_, code, message", GRPC_PREDICT_CASES, ids=[case[0] for case in GRPC_PREDICT_CASES]
)
def test_grpc_bad_predict(stubs, name, request_, code, message):
    with pytest.raises(grpc.RpcError) as error:
        stubs[0].Predict(request_, timeout=5)
    assert error.value.code() == code
    assert message in error.value.details(), error.value.details()


def test_grpc_bad_metadata_regress_and_reload(stubs):
    predict, models = stubs
    cases = [
        (
            predict.GetModelMetadata,
            get_model_metadata_pb2.GetModelMetadataRequest(model_spec={"name": "digits"}),
            "must specify at least one metadata_field",
        ),
        (
            predict.GetModelMetadata,
            get_model_metadata_pb2.GetModelMetadataRequest(
                model_spec={"name": "digits"}, metadata_field=["graph"]
            ),
            "Metadata field graph is not supported",
        ),
        (
            predict.Regress,
            regression_pb2.RegressionRequest(model_spec={"name": "estimator"}),
            "Input is empty",
        ),
        (
            models.HandleReloadConfigRequest,
            model_management_pb2.ReloadConfigRequest(),
            "must have a model_config_list",
        ),
    ]
    for method, request, message in cases:
        with pytest.raises(grpc.RpcError) as error:
            method(request, timeout=5)
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert message in error.value.details()


def test_grpc_still_serving_after_bad_requests(stubs, http, rest_url, built_models):
    for _, request, _, _ in GRPC_PREDICT_CASES:
        with pytest.raises(grpc.RpcError):
            stubs[0].Predict(request, timeout=5)
    response = stubs[0].Predict(_request(GOOD), timeout=5)
    assert tf.make_ndarray(response.outputs[OUTPUT_CLASSES]).shape == (1,)
    _assert_still_serving(http, rest_url, built_models)


@pytest.mark.parametrize(
    "text, message",
    [
        ("model_config_list { config { name: 'a' } }", "has no base_path"),
        (
            "model_config_list { config { name: 'a' base_path: '/x' } config { name: 'a' base_path: '/y' } }",
            "multiple times",
        ),
        ("model_config_list { config { nmae: 'a' } }", "invalid model config file"),
        (
            "model_config_list { config { name: 'a' base_path: '/x' model_platform: 'pytorch' } }",
            "model_platform",
        ),
    ],
)
def test_bad_model_config_text_is_a_config_error(text, message):
    with pytest.raises(ConfigError, match=message):
        parse_model_server_config(text)


@pytest.mark.parametrize("size", [b"-1", b"-7d0", b"0x10", b"+10", b" "])
def test_invalid_chunk_size_is_refused_at_once(server, size):
    """int(b"-1", 16) parses, and reading -1 bytes would wait for EOF past the body limit."""
    head = b"POST /v1/models/digits:predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    with socket.create_connection(("127.0.0.1", server.rest_port), timeout=5) as connection:
        connection.sendall(head + size + b"\r\n")
        answer = connection.recv(4096)
    assert answer.startswith(b"HTTP/1.1 400 ") and b"Malformed chunked request body" in answer, answer


def test_a_chunk_over_the_body_limit_is_refused_before_it_is_read(server):
    head = b"POST /v1/models/digits:predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    with socket.create_connection(("127.0.0.1", server.rest_port), timeout=5) as connection:
        connection.sendall(head + b"%x\r\n" % 2_000_001)  # the server's limit is 2,000,000 bytes
        answer = connection.recv(4096)
    assert answer.startswith(b"HTTP/1.1 413 ") and b"over the limit of 2000000 bytes" in answer, answer


def test_clients_that_disconnect_mid_request_do_not_hurt_the_server(server, rest_url, http, built_models):
    port = server.rest_port
    partial_requests = [
        b'POST /v1/models/digits:predict HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n{"instances": [',
        b"POST /v1/models/digits:pre",
        b"GET /v1/models/digits HTTP/1.1\r\nHost: x\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",  # a TLS ClientHello to the plain-HTTP port
    ]
    for data in partial_requests * 5:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as connection:
            connection.sendall(data)
    stub = prediction_service_pb2_grpc.PredictionServiceStub(
        grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}")
    )
    for _ in range(5):  # gRPC callers that give up before the answer
        call = stub.Predict.future(_request(np.zeros((64, 28, 28), np.uint8)), timeout=10)
        call.cancel()
    _assert_still_serving(http, rest_url, built_models)
