"""Mixed-bfloat16 training: where `auto` picks it, and that what gets scored and exported is float32."""

from __future__ import annotations

import os
import platform

import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.framework import types_pb2
from tensorflow.core.protobuf import saved_model_pb2

from client.contract import INPUT_NAME, OUTPUT_PROBABILITIES, SIGNATURE_NAME
from trainer.data import Dataset
from trainer.export import export_model, serving_archive
from trainer.model import build_model
from trainer.precision import cpu_flags, dtype_policy, processor, resolve_precision
from trainer.presets import get_preset
from trainer.train import predict_classes, stratified_split, train_model


@pytest.mark.parametrize(
    ("flags", "gpus", "expected"),
    [
        ({"avx2", "avx512_bf16"}, 0, "bfloat16"),
        ({"avx2", "amx_bf16"}, 0, "bfloat16"),
        ({"avx2", "avx512f"}, 0, "float32"),  # no native bfloat16: emulated, slower than float32
        ({"avx512_bf16"}, 1, "float32"),  # a GPU trains in float32
    ],
)
def test_auto_is_bfloat16_only_on_a_cpu_only_machine_with_native_bfloat16(flags, gpus, expected):
    assert resolve_precision("auto", frozenset(flags), gpus) == expected


def test_explicit_precisions_stand_and_others_are_refused():
    assert resolve_precision("float32", frozenset({"avx512_bf16"}), 0) == "float32"
    assert resolve_precision("bfloat16", frozenset(), 1) == "bfloat16"
    with pytest.raises(ValueError, match="precision must be one of"):
        resolve_precision("float16")


def test_cpu_flags_come_from_cpuinfo(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512_bf16\nbugs\t\t: none\n")
    assert cpu_flags(cpuinfo) == {"fpu", "avx2", "avx512_bf16"}
    assert cpu_flags(tmp_path / "absent") == frozenset()  # macOS, Windows: auto means float32


def test_the_processor_is_named_as_cpuinfo_names_it(tmp_path):
    """The model card says which processor trained a network: the same seed gives another one elsewhere."""
    cpuinfo = tmp_path / "cpuinfo"
    block = "processor\t: {}\ncpu family\t: 25\nmodel\t\t: {}\nmodel name\t: AMD EPYC\n"
    cpuinfo.write_text(block.format(0, 17) + "\n" + block.format(1, 99))
    cores = len(os.sched_getaffinity(0))
    assert processor(cpuinfo) == {
        "architecture": platform.machine(), "name": "AMD EPYC", "family": "25", "model": "17", "cores": cores,
    }
    elsewhere = processor(tmp_path / "absent")  # macOS, Windows: the architecture at least
    assert elsewhere == {"architecture": platform.machine(), "cores": cores}


def test_the_dtype_policy_is_restored_even_after_an_error():
    with pytest.raises(RuntimeError), dtype_policy("bfloat16"):
        assert keras.config.dtype_policy().name == "mixed_bfloat16"
        raise RuntimeError
    assert keras.config.dtype_policy().name == "float32"


@pytest.fixture(scope="module")
def bfloat16_run(mnist_data):
    """`fast` for 3 epochs of batch 50 on 6,000 images (5,000 to train: 300 steps, enough for batch norm's
    moving averages; with 2,000, runs swung between 38% and 88% on test) in mixed bfloat16, with its
    validation split."""
    preset = get_preset("fast").with_overrides(epochs=3, batch_size=50, val_size=1000, seed=7,
                                               precision="bfloat16")
    lines: list[str] = []
    return train_model(preset, mnist_data, limit_train=6000, log=lines.append), lines


def test_bfloat16_training_serves_a_float32_model_with_the_kept_weights(bfloat16_run, mnist_data):
    result, lines = bfloat16_run
    assert result.preset.train.precision == "bfloat16"  # the model card says how it was trained
    assert "mixed bfloat16 training (served in float32)" in lines[0]
    assert all(layer.dtype_policy.name == "float32" for layer in result.model.layers)
    # The epoch was chosen on the float32 model, and it holds that epoch's weights.
    val = stratified_split(mnist_data.y_train, 1000, 7).val
    served = predict_classes(result.model, mnist_data.x_train[val])
    assert float(np.mean(served == mnist_data.y_train[val])) == pytest.approx(result.val_accuracy)
    assert result.val_accuracy == max(result.history["val_served_accuracy"])
    assert result.test_accuracy.value > 0.8  # a trained model, as the float32 runs of test_train.py


def saved_model_dtypes(directory) -> set[int]:
    """Every dtype named by a node of the SavedModel's graph or of its functions (types_pb2 values)."""
    saved = saved_model_pb2.SavedModel.FromString((directory / "saved_model.pb").read_bytes())
    graph = saved.meta_graphs[0].graph_def
    nodes = [*graph.node, *(node for function in graph.library.function for node in function.node_def)]
    return {t for node in nodes for attr in node.attr.values()
            for t in ([attr.type] if attr.HasField("type") else list(attr.list.type))}


def test_a_bfloat16_trained_model_exports_float32_throughout(bfloat16_run, mnist_data, tmp_path):
    result, _ = bfloat16_run
    version = export_model(result.model, tmp_path, "mnist", warmup_images=mnist_data.x_test[:4])
    dtypes = saved_model_dtypes(version)
    assert types_pb2.DT_FLOAT in dtypes and types_pb2.DT_BFLOAT16 not in dtypes
    signature = tf.saved_model.load(str(version)).signatures[SIGNATURE_NAME]
    probabilities = signature(**{INPUT_NAME: tf.constant(mnist_data.x_test[:4])})[OUTPUT_PROBABILITIES]
    assert probabilities.dtype == tf.float32
    assert np.argmax(probabilities, axis=1).tolist() == result.test_predictions[:4].tolist()
    # The check would see bfloat16: the trained network itself, exported as it is, has it.
    with dtype_policy("bfloat16"):
        network = build_model(result.preset.model)
    serving_archive(network).write_out(str(tmp_path / "as_trained"), verbose=False)
    assert types_pb2.DT_BFLOAT16 in saved_model_dtypes(tmp_path / "as_trained")


def test_weight_averaging_is_refused_in_bfloat16(mnist_data):
    small = Dataset("mnist", mnist_data.x_train[:600], mnist_data.y_train[:600], mnist_data.x_test[:100],
                    mnist_data.y_test[:100])
    preset = get_preset("fast").with_overrides(epochs=1, val_size=100, precision="bfloat16",
                                               weight_average=0.9)
    with pytest.raises(ValueError, match="weight averaging trains in float32 only"):
        train_model(preset, small, log=lambda _: None)
