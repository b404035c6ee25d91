"""gRPC API via the official stubs: Predict, metadata, status, classify/regress, reload, health."""

from __future__ import annotations

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.example import example_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

from client.contract import INPUT_NAME, OUTPUT_CLASSES, OUTPUT_PROBABILITIES
from serving.config_files import parse_model_server_config


@pytest.fixture(scope="module")
def predict_stub(grpc_channel):
    return prediction_service_pb2_grpc.PredictionServiceStub(grpc_channel)


@pytest.fixture(scope="module")
def model_stub(grpc_channel):
    return model_service_pb2_grpc.ModelServiceStub(grpc_channel)


@pytest.fixture(scope="module")
def answers(built_models, images):
    loaded = {v: tf.saved_model.load(str(built_models.digits[v])) for v in (1, 2)}
    return {
        v: {
            k: t.numpy()
            for k, t in m.signatures["serving_default"](**{INPUT_NAME: tf.constant(images)}).items()
        }
        for v, m in loaded.items()
    }


def _predict_request(images, name="digits", version=None, label=None, output_filter=()):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    if version is not None:
        request.model_spec.version.value = version
    if label is not None:
        request.model_spec.version_label = label
    request.inputs[INPUT_NAME].CopyFrom(tf.make_tensor_proto(images))
    request.output_filter.extend(output_filter)
    return request


@pytest.mark.parametrize(
    "version, label, expect", [(None, None, 2), (1, None, 1), (None, "canary", 2), (None, "stable", 1)]
)
def test_predict_routes_versions_and_labels(predict_stub, images, answers, version, label, expect):
    response = predict_stub.Predict(_predict_request(images, version=version, label=label), timeout=10)
    np.testing.assert_allclose(
        tf.make_ndarray(response.outputs[OUTPUT_PROBABILITIES]),
        answers[expect][OUTPUT_PROBABILITIES],
        rtol=1e-5,
    )
    assert (
        tf.make_ndarray(response.outputs[OUTPUT_CLASSES]).tolist() == answers[expect][OUTPUT_CLASSES].tolist()
    )
    assert response.model_spec.name == "digits" and response.model_spec.version.value == expect
    assert response.model_spec.signature_name == "serving_default"


def test_output_filter_returns_only_the_asked_outputs(predict_stub, images, answers):
    response = predict_stub.Predict(_predict_request(images[:2], output_filter=[OUTPUT_CLASSES]), timeout=10)
    assert list(response.outputs) == [OUTPUT_CLASSES]
    assert response.outputs[OUTPUT_CLASSES].dtype == tf.int64.as_datatype_enum


def test_foreign_model_strings_and_second_signature(predict_stub):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "odd"
    request.inputs["text"].CopyFrom(tf.make_tensor_proto([b"a", b"\xffbc"]))
    request.inputs["values"].CopyFrom(tf.make_tensor_proto(np.ones((2, 3), np.float32)))
    response = predict_stub.Predict(request, timeout=10)
    assert tf.make_ndarray(response.outputs["length"]).tolist() == [1, 3]
    assert tf.make_ndarray(response.outputs["echo_bytes"]).tolist() == [b"a!", b"\xffbc!"]
    total = predict_pb2.PredictRequest()
    total.model_spec.name, total.model_spec.signature_name = "odd", "total"
    total.inputs["pair"].CopyFrom(tf.make_tensor_proto(np.array([[1, 2], [5, 5]], np.int64)))
    assert tf.make_ndarray(predict_stub.Predict(total, timeout=10).outputs["sum"]).tolist() == [3, 10]


def test_metadata_packs_a_signature_def_map(predict_stub):
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = "odd"
    response = predict_stub.GetModelMetadata(request, timeout=10)
    sig_map = get_model_metadata_pb2.SignatureDefMap()
    response.metadata["signature_def"].Unpack(sig_map)
    assert {"serving_default", "total"} <= set(sig_map.signature_def)
    inputs = sig_map.signature_def["serving_default"].inputs
    assert (
        inputs["text"].dtype == tf.string.as_datatype_enum
        and inputs["values"].dtype == tf.float32.as_datatype_enum
    )
    assert response.model_spec.version.value == 1


def test_model_status(model_stub):
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = "digits"
    states = model_stub.GetModelStatus(request, timeout=10).model_version_status
    assert [(s.version, s.state) for s in states] == [(1, 30), (2, 30)]  # 30 = AVAILABLE
    request.model_spec.version.value = 9
    with pytest.raises(grpc.RpcError) as error:
        model_stub.GetModelStatus(request, timeout=10)
    assert error.value.code() == grpc.StatusCode.NOT_FOUND
    assert "Could not find version 9 of model digits" in error.value.details()


def _examples(*xs):
    return [example_pb2.Example(features={"feature": {"x": {"float_list": {"value": [x]}}}}) for x in xs]


def _classify_and_regress(classify_signature: str) -> inference_pb2.MultiInferenceRequest:
    """One example, classified with `classify_signature` and regressed with regress_x, of "estimator"."""
    multi = inference_pb2.MultiInferenceRequest()
    for signature, method in (
        (classify_signature, "tensorflow/serving/classify"),
        ("regress_x", "tensorflow/serving/regress"),
    ):
        task = multi.tasks.add(method_name=method)
        task.model_spec.name, task.model_spec.signature_name = "estimator", signature
    multi.input.example_list.examples.extend(_examples(1.0))
    return multi


def test_classify_regress_and_multi_inference(predict_stub):
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = "estimator"
    request.input.example_list.examples.extend(_examples(0.0, 3.0))
    result = predict_stub.Classify(request, timeout=10).result
    assert [[c.label for c in row.classes] for row in result.classifications] == [["neg", "pos"]] * 2
    assert result.classifications[0].classes[1].score == pytest.approx(0.5)
    regress = regression_pb2.RegressionRequest()
    regress.model_spec.name, regress.model_spec.signature_name = "estimator", "regress_x"
    regress.input.example_list.examples.extend(_examples(1.0, 2.0))
    assert [r.value for r in predict_stub.Regress(regress, timeout=10).result.regressions] == [3.0, 5.0]
    results = predict_stub.MultiInference(_classify_and_regress("classify_x"), timeout=10).results
    assert results[0].classification_result.classifications[0].classes[0].label == "neg"
    assert results[1].regression_result.regressions[0].value == pytest.approx(3.0)


def test_classify_regress_and_multi_inference_name_the_servable_that_answered(predict_stub):
    classify = classification_pb2.ClassificationRequest()
    classify.model_spec.name = "estimator"  # no version and no signature: latest, serving_default
    classify.input.example_list.examples.extend(_examples(1.0))
    spec = predict_stub.Classify(classify, timeout=10).model_spec
    assert (spec.name, spec.version.value, spec.signature_name) == ("estimator", 7, "serving_default")
    regress = regression_pb2.RegressionRequest()
    regress.model_spec.name, regress.model_spec.signature_name = "estimator", "regress_x"
    regress.input.example_list.examples.extend(_examples(1.0))
    spec = predict_stub.Regress(regress, timeout=10).model_spec
    assert (spec.name, spec.version.value, spec.signature_name) == ("estimator", 7, "regress_x")
    multi = _classify_and_regress("")  # the classification on serving_default
    specs = [r.model_spec for r in predict_stub.MultiInference(multi, timeout=10).results]
    assert [(s.name, s.version.value, s.signature_name) for s in specs] == [
        ("estimator", 7, "serving_default"),
        ("estimator", 7, "regress_x"),
    ]


def test_classify_on_a_predict_signature_is_invalid_argument(predict_stub):
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = "digits"
    request.input.example_list.examples.extend(_examples(1.0))
    with pytest.raises(grpc.RpcError) as error:
        predict_stub.Classify(request, timeout=10)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "method_name to be tensorflow/serving/classify" in error.value.details()


def test_reload_config_adds_and_removes_models(tmp_path, built_models, server_factory):
    import shutil

    shutil.copytree(built_models.digits[1], tmp_path / "a" / "1")
    shutil.copytree(built_models.odd, tmp_path / "b" / "3")
    socket_path = tmp_path / "grpc.sock"
    server = server_factory(
        f'model_config_list {{ config {{ name: "a" base_path: "{tmp_path / "a"}" }} }}',
        enable_grpc_health=True,
        grpc_socket_path=str(socket_path),
    )
    with grpc.insecure_channel(f"unix:{socket_path}") as unix_channel:  # --grpc_socket_path
        request = _predict_request(np.zeros((1, 28, 28), np.uint8), name="a")
        response = prediction_service_pb2_grpc.PredictionServiceStub(unix_channel).Predict(
            request, timeout=10
        )
        assert response.model_spec.version.value == 1
    channel = grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}")
    models = model_service_pb2_grpc.ModelServiceStub(channel)
    new_config = parse_model_server_config(
        f'model_config_list {{ config {{ name: "b" base_path: "{tmp_path / "b"}" }} }}'
    )
    response = models.HandleReloadConfigRequest(
        model_management_pb2.ReloadConfigRequest(config=new_config), timeout=30
    )
    assert response.status.error_code == 0
    status = get_model_status_pb2.GetModelStatusRequest()
    status.model_spec.name = "b"
    assert models.GetModelStatus(status, timeout=10).model_version_status[0].version == 3
    with pytest.raises(grpc.RpcError) as error:  # "a" is gone: a reload realises only the new config
        prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(
            _predict_request(np.zeros((1, 28, 28), np.uint8), name="a"), timeout=10
        )
    assert error.value.code() == grpc.StatusCode.NOT_FOUND
    assert "Servable not found for request: Latest(a)" in error.value.details()

    bad_labels = parse_model_server_config(
        f'model_config_list {{ config {{ name: "b" base_path: "{tmp_path / "b"}" '
        f'version_labels {{ key: "beta" value: 4 }} }} }}'
    )
    with pytest.raises(grpc.RpcError) as error:  # a label may only name an AVAILABLE version
        models.HandleReloadConfigRequest(
            model_management_pb2.ReloadConfigRequest(config=bad_labels), timeout=30
        )
    assert error.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error.value.details() == (
        "Request to assign label to version 4 of model b, which is not currently available for inference"
    )
    beta = _predict_request(np.zeros((1, 28, 28), np.uint8), name="b", label="beta")
    with pytest.raises(grpc.RpcError) as error:  # the rejected label was not kept
        prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(beta, timeout=10)
    assert "Unrecognized servable version label: beta" in error.value.details()

    from grpc_health.v1 import health_pb2, health_pb2_grpc

    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", "tensorflow.serving.PredictionService"):
        assert (
            health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status
            == health_pb2.HealthCheckResponse.SERVING
        )
    channel.close()
