"""One loaded SavedModel version: its signatures, their metadata, and running them on numpy inputs."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tensorflow.core.framework import types_pb2
from tensorflow.core.protobuf import meta_graph_pb2, saved_model_pb2

from serving.errors import FailedPrecondition, InvalidArgument, ServingError, from_tf_error
from serving.settings import SERVE_TAG
from serving.tensor_codec import array_dtype_name, dtype_name, numpy_dtype

log = logging.getLogger(__name__)

DEFAULT_SIGNATURE = "serving_default"
PREDICT_METHOD = "tensorflow/serving/predict"
CLASSIFY_METHOD = "tensorflow/serving/classify"
REGRESS_METHOD = "tensorflow/serving/regress"


@dataclass(frozen=True)
class TensorSpec:
    """One signature input or output: its alias, dtype enum and shape (None = unknown rank, -1 = any)."""

    alias: str
    dtype: int
    shape: tuple[int, ...] | None

    @property
    def numpy_dtype(self) -> np.dtype:
        return numpy_dtype(self.dtype)

    def shape_text(self) -> str:
        return "<unknown rank>" if self.shape is None else "[" + ",".join(map(str, self.shape)) + "]"


@dataclass(frozen=True)
class Signature:
    """A serving signature as the SignatureDef describes it, plus the callable that runs it."""

    name: str
    method_name: str
    inputs: Mapping[str, TensorSpec]
    outputs: Mapping[str, TensorSpec]
    function: Callable


def _tensor_spec(alias: str, info: meta_graph_pb2.TensorInfo) -> TensorSpec:
    if info.tensor_shape.unknown_rank:
        shape = None
    else:
        shape = tuple(int(d.size) for d in info.tensor_shape.dim)
    return TensorSpec(alias, info.dtype, shape)


def read_meta_graph(path: Path, tags: tuple[str, ...] = (SERVE_TAG,)) -> meta_graph_pb2.MetaGraphDef:
    """Parse saved_model.pb and return the MetaGraphDef with exactly `tags` (clear error otherwise)."""
    pb = path / "saved_model.pb"
    saved = saved_model_pb2.SavedModel()
    try:
        saved.ParseFromString(pb.read_bytes())
    except OSError as error:
        raise ValueError(f"cannot read {pb}: {error.strerror}") from None
    except Exception as error:  # noqa: BLE001 -- protobuf raises DecodeError/RuntimeError on truncation
        raise ValueError(f"{pb} is not a valid SavedModel proto ({error})") from None
    for meta_graph in saved.meta_graphs:
        if set(meta_graph.meta_info_def.tags) == set(tags):
            return meta_graph
    found = [sorted(m.meta_info_def.tags) for m in saved.meta_graphs]
    raise ValueError(f"{pb} has no MetaGraphDef with tags {sorted(tags)} (found {found})")


class Servable:
    """A SavedModel version loaded into this process; thread-safe to run concurrently."""

    def __init__(self, model_name: str, version: int, path: Path, tags: tuple[str, ...] = (SERVE_TAG,)):
        self.model_name = model_name
        self.version = version
        self.path = Path(path)
        self.tags = tags
        self.meta_graph: meta_graph_pb2.MetaGraphDef | None = None
        self.signatures: dict[str, Signature] = {}
        self._loaded = None  # keeps the restored object (and so its variables) alive
        self._batchers: dict[str, object] = {}
        self._batcher_factory: Callable | None = None
        self._closed = False
        self._lock = threading.Lock()

    def load(self) -> None:
        """Load the SavedModel; raises ValueError or a TF error with a readable message on failure."""
        import tensorflow as tf

        self.meta_graph = read_meta_graph(self.path, self.tags)
        if not (self.path / "variables").is_dir() and _has_variables(self.meta_graph):
            raise ValueError(f"{self.path} has no variables/ directory (incomplete copy?)")
        self._loaded = tf.saved_model.load(str(self.path), tags=list(self.tags))
        functions = self._loaded.signatures
        for name, sig_def in self.meta_graph.signature_def.items():
            if name not in functions:
                continue  # e.g. TF1 "__saved_model_init_op"; not callable as a signature
            self.signatures[name] = Signature(
                name=name,
                method_name=sig_def.method_name,
                inputs={a: _tensor_spec(a, i) for a, i in sig_def.inputs.items()},
                outputs={a: _tensor_spec(a, i) for a, i in sig_def.outputs.items()},
                function=functions[name],
            )
        if not self.signatures:
            raise ValueError(f"{self.path} has no serving signatures")

    def enable_batching(self, batcher_factory: Callable) -> None:
        """Route predict calls through per-signature batch queues made by `batcher_factory(run_fn)`."""
        self._batcher_factory = batcher_factory

    def close(self) -> None:
        """Stop this version's batch queues (in-flight work finishes first)."""
        with self._lock:
            self._closed = True
            batchers, self._batchers = list(self._batchers.values()), {}
        for batcher in batchers:
            batcher.stop()

    # ----------------------------------------------------------------------------------------- run
    def signature(self, name: str, *, rest: bool = False) -> Signature:
        """Find a signature ('' = serving_default); REST and gRPC word a miss differently, as TF Serving."""
        name = name or DEFAULT_SIGNATURE
        try:
            return self.signatures[name]
        except KeyError:
            if rest:
                raise InvalidArgument(
                    f'Serving signature name: "{name}" not found in signature def'
                ) from None
            raise FailedPrecondition(f'Serving signature key "{name}" not found.') from None

    def predict(
        self,
        signature: Signature,
        inputs: dict[str, np.ndarray],
        output_filter: list[str] | tuple[str, ...] = (),
        timeout: float | None = None,
    ) -> dict[str, np.ndarray]:
        """Validate inputs against the signature, run it (batched if enabled), return the wanted outputs."""
        check_inputs(signature, inputs)
        wanted = check_output_filter(signature, output_filter)
        batcher = self._batcher(signature) if _batchable(signature, inputs) else None
        if batcher is not None:
            outputs = batcher.run(inputs, timeout)
        else:
            outputs = self.run(signature, inputs)
        return {alias: outputs[alias] for alias in wanted}

    def run(self, signature: Signature, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Call the signature's function on already-validated inputs; TF errors become ServingErrors."""
        import tensorflow as tf

        try:
            tensors = {alias: tf.constant(value) for alias, value in inputs.items()}
            result = signature.function(**tensors)
            return {alias: value.numpy() for alias, value in result.items()}
        except ServingError:
            raise
        except Exception as error:  # noqa: BLE001 -- TF raises many types; all are request failures here
            raise from_tf_error(error) from None

    def _batcher(self, signature: Signature):
        """This signature's batch queue; None without batching or once closed (in-flight requests that
        still hold an unloaded version run unbatched: no new queue, whose threads nobody would stop)."""
        with self._lock:
            if self._batcher_factory is None or self._closed:
                return None
            batcher = self._batchers.get(signature.name)
            if batcher is None:
                batcher = self._batcher_factory(lambda inputs: self.run(signature, inputs))
                self._batchers[signature.name] = batcher
            return batcher


def _has_variables(meta_graph: meta_graph_pb2.MetaGraphDef) -> bool:
    """Whether the graph restores variables (a variable-free model legitimately lacks variables/)."""
    ops = {"VarHandleOp", "VariableV2", "Variable"}
    if any(node.op in ops for node in meta_graph.graph_def.node):
        return True
    return any(node.op in ops for f in meta_graph.graph_def.library.function for node in f.node_def)


def _batchable(signature: Signature, inputs: dict[str, np.ndarray]) -> bool:
    """Batching needs every input to have a shared leading (batch) dimension."""
    sizes = {value.shape[0] if value.ndim else None for value in inputs.values()}
    return len(sizes) == 1 and None not in sizes


def check_inputs(signature: Signature, inputs: Mapping[str, np.ndarray]) -> None:
    """Check names, dtypes and the dimensions the signature fixes, before TF sees the tensors."""
    expected, sent = set(signature.inputs), set(inputs)
    if expected != sent:
        raise InvalidArgument(
            f"input size does not match signature: {len(sent)}!={len(expected)} "
            f"len({{{','.join(sorted(sent))}}}) != len({{{','.join(sorted(expected))}}}). "
            f"Sent extra: {{{','.join(sorted(sent - expected))}}}. "
            f"Missing but required: {{{','.join(sorted(expected - sent))}}}."
        )
    for alias, value in inputs.items():
        spec = signature.inputs[alias]
        if value.dtype != spec.numpy_dtype:
            got = array_dtype_name(value)
            raise InvalidArgument(
                f"Expects arg[{sorted(signature.inputs).index(alias)}] ('{alias}') to be "
                f"{dtype_name(spec.dtype)} but {got} is provided"
            )
        if spec.shape is None:
            continue
        if value.ndim != len(spec.shape) or any(
            want not in (-1, got) for want, got in zip(spec.shape, value.shape, strict=True)
        ):
            raise InvalidArgument(
                f"input '{alias}' has shape [{','.join(map(str, value.shape))}] but the signature "
                f"expects {spec.shape_text()} (-1 = any size)"
            )


def check_output_filter(signature: Signature, output_filter) -> list[str]:
    """The output aliases to return; TF Serving's messages for unknown or repeated aliases."""
    if not output_filter:
        return list(signature.outputs)
    seen: set[str] = set()
    for alias in output_filter:
        if alias not in signature.outputs:
            raise InvalidArgument(
                f"output tensor alias not found in signature: {alias} Outputs expected to be in the "
                f"set {{{','.join(sorted(signature.outputs))}}}."
            )
        if alias in seen:
            raise InvalidArgument(f"duplicate output tensor alias: {alias}")
        seen.add(alias)
    return list(output_filter)


def is_string(spec: TensorSpec) -> bool:
    """Whether a tensor is DT_STRING (JSON strings and {"b64": ...} values)."""
    return spec.dtype == types_pb2.DT_STRING
