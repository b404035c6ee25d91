"""TF Serving's REST JSON <-> numpy tensors, with TF Serving's error texts (util/json_tensor.cc)."""

from __future__ import annotations

import base64
import binascii
import itertools
import json
import sys
from typing import Any

import numpy as np

from serving.errors import InvalidArgument
from serving.servable import Signature, TensorSpec, is_string
from serving.tensor_codec import dtype_name

_INT_KINDS = "iu"
_MAX_DIMS = 64  # numpy's limit (NPY_MAXDIMS); deeper lists are no tensor, and recursing on them is a crash
_INT64_RANGE = (-(2**63), 2**63 - 1)
_DOUBLE_RANGE = (-sys.float_info.max, sys.float_info.max)  # a bigger JSON integer cannot become a float


def parse_json_body(body: bytes) -> dict:
    """Decode a request body into a JSON object, with rapidjson-style parse errors."""
    if not body.strip():
        raise InvalidArgument("JSON Parse error: The document is empty")
    try:
        doc = json.loads(body)
    except UnicodeDecodeError as error:
        raise InvalidArgument(
            f"JSON Parse error: Invalid encoding in string. at offset: {error.start}"
        ) from None
    except json.JSONDecodeError as error:
        raise InvalidArgument(f"JSON Parse error: {error.msg}. at offset: {error.pos}") from None
    except RecursionError:
        raise InvalidArgument("JSON Parse error: Nesting too deep. at offset: 0") from None
    except ValueError:  # an integer literal over Python's 4300-digit conversion limit
        raise InvalidArgument("JSON Parse error: Number too big (an integer of over 4300 digits)") from None
    if not isinstance(doc, dict):
        raise InvalidArgument(f"JSON Value: {_short(doc)} Is not object")
    return doc


def may_hold_bool(body: bytes) -> bool:
    """Whether a JSON body can hold a true/false: only its literals make one (a cheap bytes search).

    The one-byte searches (memchr) go first: in a body of digits, b"true" in body is tens of times slower; a
    numeric body rarely has a 'u' or an 'l'. A NUL byte means UTF-16 or UTF-32, which json.loads reads too.
    """
    return (b"u" in body and b"true" in body) or (b"l" in body and b"false" in body) or b"\0" in body


def signature_name_of(doc: dict) -> str:
    """The request's optional signature_name ('' means serving_default)."""
    name = doc.get("signature_name", "")
    if not isinstance(name, str):
        raise InvalidArgument("'signature_name' key must be a string value.")
    return name


# ------------------------------------------------------------------------------------ predict request
def predict_inputs(
    doc: dict, signature: Signature, *, may_hold_bool: bool = True
) -> tuple[dict[str, np.ndarray], bool]:
    """The signature's input tensors from a predict request; True when it used the row format.

    may_hold_bool=False (see may_hold_bool()) skips the per-value walk that rejects true/false in numbers.
    """
    has_instances, has_inputs = "instances" in doc, "inputs" in doc
    if has_instances and has_inputs:
        raise InvalidArgument(
            "Not formatted correctly expecting only one of 'inputs' or 'instances' keys to exist"
        )
    if not (has_instances or has_inputs):
        raise InvalidArgument("Missing 'inputs' or 'instances' key")
    if has_instances:
        return _row_inputs(doc["instances"], signature, may_hold_bool), True
    return _columnar_inputs(doc["inputs"], signature, may_hold_bool), False


def _row_inputs(instances: Any, signature: Signature, may_hold_bool: bool) -> dict[str, np.ndarray]:
    if not isinstance(instances, list):
        raise InvalidArgument("Expecting 'instances' to be an list/array")
    if not instances:
        raise InvalidArgument("No values in 'instances' array")
    names = sorted(signature.inputs)
    objects = [isinstance(e, dict) and not _is_b64(e) for e in instances]
    if len(names) == 1 and not any(objects):
        spec = signature.inputs[names[0]]
        return {spec.alias: _to_array(instances, spec, "instances", may_hold_bool, row=True)}
    if not all(objects):
        raise InvalidArgument(
            "instances is a plain list, but expecting list of objects as multiple input "
            "tensors required as per tensorinfo_map"
        )
    columns: dict[str, list] = {name: [] for name in names}
    for index, element in enumerate(instances):
        if set(element) != set(names):
            missing = sorted(set(names) - set(element))
            detail = (
                f"JSON object: does not have named input: {missing[0]}"
                if missing
                else f"JSON object keys must be equal to: {','.join(names)} "
                f"(got: {','.join(sorted(element))})"
            )
            raise InvalidArgument(
                f"Failed to process element: {index} of 'instances' list. Error: INVALID_ARGUMENT: {detail}"
            )
        for name in names:
            columns[name].append(element[name])
    return {
        name: _to_array(columns[name], signature.inputs[name], "instances", may_hold_bool, row=True)
        for name in names
    }


def _columnar_inputs(inputs: Any, signature: Signature, may_hold_bool: bool) -> dict[str, np.ndarray]:
    names = sorted(signature.inputs)
    if isinstance(inputs, dict) and not _is_b64(inputs):
        for name in names:
            if name not in inputs:
                raise InvalidArgument(f"Missing named input: {name} in 'inputs' object.")
        extra = sorted(set(inputs) - set(names))
        if extra:
            raise InvalidArgument(
                f"'inputs' object keys must be equal to: {','.join(names)} (unexpected: {','.join(extra)})"
            )
        return {
            name: _to_array(inputs[name], signature.inputs[name], "inputs", may_hold_bool) for name in names
        }
    if len(names) != 1:
        raise InvalidArgument(
            f"'inputs' is a plain value, but the signature has several inputs "
            f"({','.join(names)}): send an object of name -> tensor"
        )
    spec = signature.inputs[names[0]]
    return {spec.alias: _to_array(inputs, spec, "inputs", may_hold_bool)}


def _to_array(value: Any, spec: TensorSpec, key: str, may_hold_bool: bool, row: bool = False) -> np.ndarray:
    """One JSON (nested) list -> an array of the signature's dtype; rejects ragged lists and wrong types."""
    if is_string(spec):
        return _string_array(value, key, row)
    try:
        array = np.asarray(value)
    except (ValueError, OverflowError):
        array = None
    if array is None or array.dtype == object or array.dtype.kind in "SU":
        _raise_first_bad(value, spec, key, row)
    target = spec.numpy_dtype
    kind = array.dtype.kind
    if target.kind == "b":
        ok = kind == "b"
    elif may_hold_bool and _has_bool(value, array.ndim):  # numpy turns [1, true] into [1, 1]
        ok = False
    elif target.kind == "f":
        ok = kind in "iuf"
    else:
        ok = kind in _INT_KINDS and (
            array.size == 0 or (array.min() >= np.iinfo(target).min and array.max() <= np.iinfo(target).max)
        )
    if not ok:
        _raise_first_bad(value, spec, key, row)
    return array.astype(target, copy=False)


def _has_bool(value: Any, ndim: int) -> bool:
    """Whether a regular nested list of `ndim` levels (numpy accepted it) holds a JSON true/false."""
    if ndim == 0:
        return isinstance(value, bool)
    leaves = value
    for _ in range(ndim - 1):
        leaves = itertools.chain.from_iterable(leaves)
    return bool in set(map(type, leaves))


def _string_array(value: Any, key: str, row: bool) -> np.ndarray:
    shape = _nested_shape(value, key, row)
    flat: list[bytes] = []
    _flatten_strings(value, flat, key)
    array = np.empty(len(flat), dtype=object)
    array[:] = flat
    return array.reshape(shape)


def _flatten_strings(value: Any, out: list[bytes], key: str) -> None:
    if isinstance(value, list):
        for item in value:
            _flatten_strings(item, out, key)
    elif isinstance(value, str):
        out.append(value.encode("utf-8"))
    elif _is_b64(value):
        out.append(_decode_b64(value["b64"]))
    else:
        raise InvalidArgument(
            f"JSON Value: {_short(value)} Type: {_json_type(value)} is not of expected type: string"
        )


def _decode_b64(text: Any) -> bytes:
    if not isinstance(text, str):
        raise InvalidArgument(f"'b64' value must be a string, got {_json_type(text)}")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidArgument(
            f"Unable to base64 decode {_short(text)} (use standard base64 with +/ and padding, not URL-safe)"
        ) from None


def _nested_shape(value: Any, key: str, row: bool, depth: int = 0) -> tuple[int, ...]:
    """The dense shape of nested lists; a ragged list names the first element that differs."""
    if not isinstance(value, list):
        return ()
    if depth == _MAX_DIMS:
        raise InvalidArgument(
            f"'{key}' nests lists more than {_MAX_DIMS} deep, but a tensor has at most {_MAX_DIMS} dimensions"
        )
    shapes = [_nested_shape(item, key, False, depth + 1) for item in value]
    for index, shape in enumerate(shapes[1:], start=1):
        if shape != shapes[0]:
            where = (
                f"Failed to process element: {index} of '{key}' list. Error: INVALID_ARGUMENT: "
                if row
                else ""
            )
            raise InvalidArgument(
                f"{where}Expecting shape {_dims(shapes[0])} but got: {_dims(shape)} "
                f"(ragged nested lists: every element needs the same shape)"
            )
    return (len(value),) + (shapes[0] if shapes else ())


def _raise_first_bad(value: Any, spec: TensorSpec, key: str, row: bool) -> None:
    """Find the first leaf that does not fit the dtype (or the ragged spot) and raise a precise error."""
    _nested_shape(value, key, row)  # ragged lists raise here
    items = value if (row and isinstance(value, list)) else [value]
    for index, item in enumerate(items):
        bad = _first_bad_leaf(item, spec.numpy_dtype)
        if bad is not None:
            detail = (
                f"JSON Value: {_short(bad)} Type: {_json_type(bad)} is not of expected type: "
                f"{dtype_name(spec.dtype)}"
            )
            if _is_number(bad) and spec.numpy_dtype.kind in _INT_KINDS and float(bad).is_integer():
                info = np.iinfo(spec.numpy_dtype)
                detail += f" (out of range [{info.min}, {info.max}])"
            if row:
                raise InvalidArgument(
                    f"Failed to process element: {index} of '{key}' list. Error: INVALID_ARGUMENT: {detail}"
                )
            raise InvalidArgument(detail)
    raise InvalidArgument(f"'{key}' could not be converted to a {dtype_name(spec.dtype)} tensor")


def _first_bad_leaf(value: Any, target: np.dtype) -> Any:
    if isinstance(value, list):
        for item in value:
            bad = _first_bad_leaf(item, target)
            if bad is not None:
                return bad
        return None
    if target.kind == "b":
        return None if isinstance(value, bool) else value
    if not _is_number(value):
        return value
    if target.kind == "f":
        return None
    if isinstance(value, float):
        return value
    info = np.iinfo(target)
    return None if info.min <= value <= info.max else value


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_b64(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and "b64" in value


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "Bool"
    if value is None:
        return "Null"
    return {str: "String", dict: "Object", list: "Array"}.get(type(value), "Number")


def _short(value: Any, limit: int = 80) -> str:
    text = json.dumps(value, ensure_ascii=False) if not isinstance(value, float) else repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _dims(shape: tuple[int, ...]) -> str:
    return "[" + ",".join(map(str, shape)) + "]"


# ----------------------------------------------------------------------------------- predict response
def predict_response(outputs: dict[str, np.ndarray], row: bool) -> dict:
    """{"predictions": ...} for row requests, {"outputs": ...} for columnar ones; one output is unnamed."""
    if not row:
        if len(outputs) == 1:
            ((alias, value),) = outputs.items()
            return {"outputs": _to_json_value(alias, value)}
        return {"outputs": {alias: _to_json_value(alias, value) for alias, value in outputs.items()}}
    batch = None
    for alias, value in outputs.items():
        if value.ndim == 0:
            raise InvalidArgument(f"Tensor name: {alias} has no shape information ")
        if batch is None:
            batch = value.shape[0]
        elif value.shape[0] != batch:
            raise InvalidArgument(
                f"Tensor name: {alias} has inconsistent batch size: {value.shape[0]} expecting: {batch}"
            )
    if len(outputs) == 1:
        ((alias, value),) = outputs.items()
        return {"predictions": _to_json_value(alias, value)}
    columns = {alias: _to_json_value(alias, value) for alias, value in outputs.items()}
    return {
        "predictions": [
            dict(zip(columns, row_values, strict=True)) for row_values in zip(*columns.values(), strict=True)
        ]
    }


def _to_json_value(alias: str, value: np.ndarray) -> Any:
    if value.dtype == object or value.dtype.kind == "S":
        encode = _b64_json if alias.endswith("_bytes") else _text_json
        return _map_nested(value.tolist(), encode)
    return value.tolist()


def _b64_json(item: bytes) -> dict:
    return {"b64": base64.b64encode(item).decode("ascii")}


def _text_json(item: bytes) -> str:
    return item.decode("utf-8", errors="replace") if isinstance(item, bytes) else str(item)


def _map_nested(value: Any, fn) -> Any:
    return [_map_nested(v, fn) for v in value] if isinstance(value, list) else fn(value)


def dumps(doc: Any) -> bytes:
    """Encode a response body (NaN and Infinity as TF Serving writes them)."""
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


# ---------------------------------------------------------------------------- classify / regress input
def examples_from_json(doc: dict):
    """The request's `examples` (and `context`) as tf.train.Example protos (context merged into each)."""
    from tensorflow.core.example import example_pb2

    examples = doc.get("examples")
    if examples is None:
        raise InvalidArgument("Missing 'examples' key")
    if not isinstance(examples, list):
        raise InvalidArgument("'examples' must be a list/array of objects")
    if not examples:
        raise InvalidArgument("No values in 'examples' array")
    context = doc.get("context", {})
    if not isinstance(context, dict):
        raise InvalidArgument("'context' must be an object of feature name -> value")
    context_example = _example_from_json(context, "context")
    result = []
    for index, example in enumerate(examples):
        if not isinstance(example, dict):
            raise InvalidArgument(
                f"Failed to process element: {index} of 'examples' list. Error: "
                f"INVALID_ARGUMENT: JSON Value: {_short(example)} Is not object"
            )
        shared = set(example) & set(context)
        if shared:
            raise InvalidArgument(
                f"Feature '{sorted(shared)[0]}' appears in both 'context' and example {index}"
            )
        merged = example_pb2.Example()
        merged.CopyFrom(context_example)
        merged.MergeFrom(_example_from_json(example, f"examples[{index}]"))
        result.append(merged)
    return result


def _example_from_json(features: dict, where: str):
    from tensorflow.core.example import example_pb2

    example = example_pb2.Example()
    for name, value in features.items():
        values = value if isinstance(value, list) else [value]
        feature = example.features.feature[name]
        if values and all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            _check_ints(values, _INT64_RANGE, f"{where}: feature '{name}'", "int64")
            feature.int64_list.value.extend(values)
        elif values and all(_is_number(v) for v in values):
            _check_ints(values, _DOUBLE_RANGE, f"{where}: feature '{name}'", "float")
            feature.float_list.value.extend(values)
        elif values and all(isinstance(v, str) or _is_b64(v) for v in values):
            feature.bytes_list.value.extend(
                v.encode("utf-8") if isinstance(v, str) else _decode_b64(v["b64"]) for v in values
            )
        elif not values:
            raise InvalidArgument(f"{where}: feature '{name}' has an empty list of values")
        else:
            raise InvalidArgument(
                f"{where}: feature '{name}' must be a number, a string, "
                f'{{"b64": ...}} or a list of one of these, got {_short(value)}'
            )
    return example


def _check_ints(values: list, bounds: tuple, what: str, kind: str) -> None:
    """Refuse the first integer outside bounds, which the feature's proto list cannot hold."""
    low, high = bounds
    bad = next((v for v in values if isinstance(v, int) and not low <= v <= high), None)
    if bad is not None:
        raise InvalidArgument(f"{what} has {_short(bad)}, out of the {kind} range [{low}, {high}]")
