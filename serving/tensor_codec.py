"""TensorProto <-> numpy without per-request TensorFlow overhead (tensor_content is copied, not parsed)."""

from __future__ import annotations

import math

import numpy as np
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2

from serving.errors import InvalidArgument

# DataType enum -> numpy dtype, for the dtypes whose TensorProto can carry raw tensor_content.
_NUMPY_BY_DTYPE: dict[int, np.dtype] = {
    types_pb2.DT_FLOAT: np.dtype(np.float32),
    types_pb2.DT_DOUBLE: np.dtype(np.float64),
    types_pb2.DT_HALF: np.dtype(np.float16),
    types_pb2.DT_INT8: np.dtype(np.int8),
    types_pb2.DT_INT16: np.dtype(np.int16),
    types_pb2.DT_INT32: np.dtype(np.int32),
    types_pb2.DT_INT64: np.dtype(np.int64),
    types_pb2.DT_UINT8: np.dtype(np.uint8),
    types_pb2.DT_UINT16: np.dtype(np.uint16),
    types_pb2.DT_UINT32: np.dtype(np.uint32),
    types_pb2.DT_UINT64: np.dtype(np.uint64),
    types_pb2.DT_BOOL: np.dtype(np.bool_),
}
MAX_PADDED_ELEMENTS = 1 << 20  # a repeated-field tensor may be padded up to this many elements
_DTYPE_BY_NUMPY = {v: k for k, v in _NUMPY_BY_DTYPE.items()}


def dtype_name(dtype: int) -> str:
    """'DT_UINT8' -> 'uint8', as TF error messages spell dtypes."""
    try:
        return types_pb2.DataType.Name(dtype).removeprefix("DT_").lower()
    except ValueError:
        return f"unknown dtype {dtype}"


def array_dtype_name(array: np.ndarray) -> str:
    """TF's name for an array's dtype: float32 -> 'float', bytes objects -> 'string'."""
    if array.dtype.kind in "OSU":
        return "string"
    enum = _DTYPE_BY_NUMPY.get(array.dtype)
    return dtype_name(enum) if enum is not None else array.dtype.name


def numpy_dtype(dtype: int) -> np.dtype:
    """The numpy dtype for a DataType enum; strings become object arrays of bytes."""
    if dtype == types_pb2.DT_STRING:
        return np.dtype(object)
    try:
        return _NUMPY_BY_DTYPE[dtype]
    except KeyError:
        raise InvalidArgument(f"unsupported tensor dtype: {dtype_name(dtype)}") from None


def to_ndarray(proto: tensor_pb2.TensorProto, name: str = "") -> np.ndarray:
    """Decode one TensorProto; a malformed proto is an InvalidArgument naming the input."""
    if proto.tensor_shape.unknown_rank:
        raise InvalidArgument(f"input tensor {name!r} has unknown rank")
    shape = tuple(d.size for d in proto.tensor_shape.dim)
    if any(size < 0 for size in shape):
        raise InvalidArgument(f"input tensor {name!r} has a negative dimension: {list(shape)}")
    dtype = _NUMPY_BY_DTYPE.get(proto.dtype)
    if dtype is not None and proto.tensor_content:
        expected = math.prod(shape) * dtype.itemsize  # Python ints: np.prod would wrap around int64
        if len(proto.tensor_content) != expected:
            raise InvalidArgument(
                f"input tensor {name!r}: tensor_content has {len(proto.tensor_content)} bytes but shape "
                f"{list(shape)} of {dtype_name(proto.dtype)} needs {expected}"
            )
        return np.frombuffer(proto.tensor_content, dtype=dtype).reshape(shape)
    if proto.dtype != types_pb2.DT_STRING and dtype is None:
        raise InvalidArgument(f"input tensor {name!r} has unsupported dtype {dtype_name(proto.dtype)}")
    _check_expansion(proto, shape, name)
    import tensorflow as tf  # the repeated-field layouts are rare; TF's decoder handles them all

    try:
        return tf.make_ndarray(proto)
    except Exception as error:  # noqa: BLE001 -- any decode failure is the caller's malformed tensor
        raise InvalidArgument(f"input tensor {name!r} could not be decoded: {error}") from None


def _check_expansion(proto: tensor_pb2.TensorProto, shape: tuple[int, ...], name: str) -> None:
    """Refuse a tiny proto that asks to be padded out to a huge tensor (one value, shape [10**7,28,28]).

    TF fills a repeated-field tensor from its last value; unbounded, a 40-byte request would make the
    server allocate gigabytes and run the model for minutes.
    """
    elements = math.prod(shape)
    carried = sum(len(values) for field, values in proto.ListFields() if field.name.endswith("_val"))
    if elements > max(carried, MAX_PADDED_ELEMENTS):
        raise InvalidArgument(
            f"input tensor {name!r} has shape {list(shape)} ({elements} elements) but carries {carried} "
            f"values; padding a tensor from its last value is limited to {MAX_PADDED_ELEMENTS} elements "
            "(send every value, or the raw bytes in tensor_content)"
        )


def to_tensor_proto(array: np.ndarray, dtype: int | None = None) -> tensor_pb2.TensorProto:
    """Encode a numpy array (bytes objects for strings) as a TensorProto."""
    array = np.asarray(array)
    shape = tensor_shape_pb2.TensorShapeProto(
        dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=s) for s in array.shape]
    )
    if array.dtype.kind in "OSU" or dtype == types_pb2.DT_STRING:
        values = [v if isinstance(v, bytes) else str(v).encode() for v in array.reshape(-1).tolist()]
        return tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING, tensor_shape=shape, string_val=values)
    enum = _DTYPE_BY_NUMPY.get(array.dtype)
    if enum is None:
        raise InvalidArgument(f"cannot encode an output of numpy dtype {array.dtype}")
    return tensor_pb2.TensorProto(
        dtype=enum, tensor_shape=shape, tensor_content=np.ascontiguousarray(array).tobytes()
    )
