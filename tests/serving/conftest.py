"""Fixtures for the serving tests: tiny SavedModels built in a second, and servers on free ports."""

from __future__ import annotations

import shutil
import socket
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import tensorflow as tf

from client.contract import (
    IMAGE_SIZE,
    INPUT_NAME,
    NUM_CLASSES,
    OUTPUT_CLASSES,
    OUTPUT_PROBABILITIES,
    PIXEL_MAX,
    SIGNATURE_NAME,
)
from serving.batching import BatchingConfig
from serving.config_files import parse_model_server_config
from serving.server import ModelServer
from serving.settings import RestOptions, ServerConfig


class DigitsLike(tf.Module):
    """Our signature contract on a linear model: uint8 [b,28,28] -> probabilities [b,10], classes [b]."""

    def __init__(self, seed: int):
        super().__init__()
        rng = np.random.default_rng(seed)
        self.w = tf.Variable(rng.normal(size=(IMAGE_SIZE * IMAGE_SIZE, NUM_CLASSES)).astype("float32"))

    @tf.function(input_signature=[tf.TensorSpec([None, IMAGE_SIZE, IMAGE_SIZE], tf.uint8, name=INPUT_NAME)])
    def serve(self, images):
        x = tf.reshape(tf.cast(images, tf.float32) / PIXEL_MAX, [-1, IMAGE_SIZE * IMAGE_SIZE])
        probabilities = tf.nn.softmax(x @ self.w)
        return {OUTPUT_PROBABILITIES: probabilities, OUTPUT_CLASSES: tf.argmax(probabilities, axis=1)}


class Odd(tf.Module):
    """A signature unlike ours: a string and a float input, three outputs incl. a `_bytes` string."""

    def __init__(self):
        super().__init__()
        self.offset = tf.Variable(0.5)

    @tf.function(
        input_signature=[
            tf.TensorSpec([None], tf.string, name="text"),
            tf.TensorSpec([None, 3], tf.float32, name="values"),
        ]
    )
    def serve(self, text, values):
        return {
            "length": tf.strings.length(text),
            "doubled": values * 2 + self.offset,
            "echo_bytes": tf.strings.join([text, "!"]),
        }

    @tf.function(input_signature=[tf.TensorSpec([None, 2], tf.int64, name="pair")])
    def total(self, pair):
        return {"sum": tf.reduce_sum(pair, axis=1)}


def save_digits_model(path: Path, seed: int) -> DigitsLike:
    module = DigitsLike(seed)
    tf.saved_model.save(module, str(path), signatures={SIGNATURE_NAME: module.serve})
    return module


def save_odd_model(path: Path) -> None:
    module = Odd()
    tf.saved_model.save(
        module, str(path), signatures={"serving_default": module.serve, "total": module.total}
    )


def save_estimator_style_model(path: Path) -> None:
    """A TF1-style model with classify and regress signatures over serialized tf.Examples."""
    graph = tf.Graph()
    with graph.as_default():
        serialized = tf.compat.v1.placeholder(tf.string, [None], name="tf_example")
        features = tf.io.parse_example(serialized, {"x": tf.io.FixedLenFeature([1], tf.float32)})
        x = features["x"]
        weight = tf.compat.v1.get_variable("w", initializer=tf.constant([[2.0]]))
        y = tf.reshape(x @ weight + 1.0, [-1])  # regression: 2x + 1
        scores = tf.concat([tf.sigmoid(-x), tf.sigmoid(x)], axis=1)  # [b, 2]
        classes = tf.tile(tf.constant([["neg", "pos"]]), [tf.shape(x)[0], 1])
        sig_util = tf.compat.v1.saved_model.signature_def_utils
        build = tf.compat.v1.saved_model.utils.build_tensor_info
        signatures = {
            "serving_default": sig_util.classification_signature_def(serialized, classes, scores),
            "classify_x": sig_util.classification_signature_def(serialized, classes, scores),
            "regress_x": sig_util.regression_signature_def(serialized, y),
            "predict_y": sig_util.build_signature_def(
                {"x": build(x)}, {"y": build(y)}, "tensorflow/serving/predict"
            ),
        }
        with tf.compat.v1.Session(graph=graph) as session:
            session.run(tf.compat.v1.global_variables_initializer())
            builder = tf.compat.v1.saved_model.Builder(str(path))
            builder.add_meta_graph_and_variables(session, ["serve"], signature_def_map=signatures)
            builder.save()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def built_models(tmp_path_factory) -> SimpleNamespace:
    """Versions 1 and 2 of a digits-like model, the odd model and the estimator-style model, built once."""
    root = tmp_path_factory.mktemp("built")
    save_digits_model(root / "digits1", seed=1)
    save_digits_model(root / "digits2", seed=2)
    save_odd_model(root / "odd")
    save_estimator_style_model(root / "estimator")
    return SimpleNamespace(
        root=root,
        digits={1: root / "digits1", 2: root / "digits2"},
        odd=root / "odd",
        estimator=root / "estimator",
    )


def reference_predict(path: Path, images: np.ndarray) -> dict[str, np.ndarray]:
    """The in-process signature call, for comparing answers."""
    loaded = tf.saved_model.load(str(path))
    out = loaded.signatures[SIGNATURE_NAME](**{INPUT_NAME: tf.constant(images)})
    return {k: v.numpy() for k, v in out.items()}


def start_server(config_text: str | None, **overrides) -> ModelServer:
    """An in-process ModelServer on free ports (127.0.0.1), started and ready."""
    options = dict(
        model_config=parse_model_server_config(config_text) if config_text else None,
        grpc_port=0,
        rest_port=0,
        host="127.0.0.1",
        file_system_poll_wait_seconds=0.2,
        grpc_max_threads=16,
        rest=RestOptions(
            num_threads=16, max_body_bytes=2_000_000, metrics_path="/monitoring/prometheus/metrics"
        ),
        shutdown_grace_seconds=10,
    )
    options.update(overrides)
    server = ModelServer(ServerConfig(**options))
    server.start(ready_timeout_s=60)
    return server


@pytest.fixture(scope="module")
def model_root(tmp_path_factory, built_models) -> Path:
    """A model directory: digits (versions 1, 2, labels stable=1 canary=2), odd, estimator."""
    root = tmp_path_factory.mktemp("models")
    for version in (1, 2):
        shutil.copytree(built_models.digits[version], root / "digits" / str(version))
    shutil.copytree(built_models.odd, root / "odd" / "1")
    shutil.copytree(built_models.estimator, root / "estimator" / "7")
    return root


@pytest.fixture(scope="module")
def server(model_root) -> ModelServer:
    """One server for the read-only API tests."""
    config = f"""model_config_list {{
      config {{ name: "digits" base_path: "{model_root / "digits"}" model_platform: "tensorflow"
               model_version_policy {{ all {{}} }}
               version_labels {{ key: "stable" value: 1 }} version_labels {{ key: "canary" value: 2 }} }}
      config {{ name: "odd" base_path: "{model_root / "odd"}" }}
      config {{ name: "estimator" base_path: "{model_root / "estimator"}" }}
    }}"""
    server = start_server(config, batching=None)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def rest_url(server) -> str:
    return f"http://127.0.0.1:{server.rest_port}"


@pytest.fixture(scope="module")
def grpc_channel(server):
    import grpc

    channel = grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}")
    yield channel
    channel.close()


@pytest.fixture(scope="session")
def images() -> np.ndarray:
    """Eight different uint8 images [8,28,28]."""
    return np.random.default_rng(0).integers(
        0, PIXEL_MAX + 1, size=(8, IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8
    )


@pytest.fixture(scope="session")
def batching_config() -> BatchingConfig:
    return BatchingConfig(
        max_batch_size=16, batch_timeout_micros=2000, max_enqueued_batches=100, num_batch_threads=2
    )


@pytest.fixture
def server_factory():
    """start_server(config_text, **overrides) for tests that need their own server; stopped afterwards."""
    started: list[ModelServer] = []

    def factory(config_text: str, **overrides) -> ModelServer:
        server = start_server(config_text, **overrides)
        started.append(server)
        return server

    yield factory
    for server in started:
        server.stop()


@pytest.fixture(scope="session")
def model_builders() -> SimpleNamespace:
    """The model-building helpers, for tests that write versions while a server runs."""
    return SimpleNamespace(
        digits=save_digits_model,
        odd=save_odd_model,
        estimator=save_estimator_style_model,
        reference=reference_predict,
        free_port=free_port,
    )
