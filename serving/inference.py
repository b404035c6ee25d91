"""Classify, Regress and MultiInference on tf.Example inputs, answered as TF Serving answers them."""

from __future__ import annotations

import numpy as np
from tensorflow_serving.apis import classification_pb2, inference_pb2, regression_pb2

from serving.errors import InvalidArgument
from serving.servable import CLASSIFY_METHOD, DEFAULT_SIGNATURE, REGRESS_METHOD, Servable, Signature

INPUTS_KEY = "inputs"  # TF Serving's kClassifyInputs / kRegressInputs
CLASSES_KEY, SCORES_KEY, OUTPUTS_KEY = "classes", "scores", "outputs"


def examples_from_input(request_input) -> list:
    """tensorflow.serving.Input -> a list of tf.train.Example (context merged into each example)."""
    kind = request_input.WhichOneof("kind")
    if kind == "example_list":
        examples = list(request_input.example_list.examples)
    elif kind == "example_list_with_context":
        context = request_input.example_list_with_context.context
        examples = []
        for example in request_input.example_list_with_context.examples:
            merged = type(example)()
            merged.CopyFrom(context)
            merged.MergeFrom(example)
            examples.append(merged)
    else:
        raise InvalidArgument("Input is empty: set example_list or example_list_with_context")
    if not examples:
        raise InvalidArgument("Input is empty.")
    return examples


def _signature(servable: Servable, name: str, method: str, kind: str) -> Signature:
    name = name or DEFAULT_SIGNATURE
    signature = servable.signatures.get(name)
    if signature is None:
        raise InvalidArgument(f"No signature was found with the name: {name}")
    if signature.method_name != method:
        raise InvalidArgument(
            f"Expected {kind} signature method_name to be {method}. Was: {signature.method_name}"
        )
    if INPUTS_KEY not in signature.inputs:
        raise InvalidArgument(
            f"No {kind} inputs found in SignatureDef: expected an input named "
            f"'{INPUTS_KEY}' (serialized tf.Example strings)"
        )
    return signature


def _run(servable: Servable, signature: Signature, examples: list) -> dict[str, np.ndarray]:
    serialized = np.empty(len(examples), dtype=object)
    serialized[:] = [example.SerializeToString() for example in examples]
    return servable.run(signature, {INPUTS_KEY: serialized})


def classify(
    servable: Servable, signature_name: str, examples: list
) -> classification_pb2.ClassificationResult:
    """Run a classify signature; each example gets its (label, score) pairs."""
    signature = _signature(servable, signature_name, CLASSIFY_METHOD, "classification")
    if CLASSES_KEY not in signature.outputs and SCORES_KEY not in signature.outputs:
        raise InvalidArgument(
            "Expected classification signature outputs to contain at least one of "
            f'"{CLASSES_KEY}" or "{SCORES_KEY}".'
        )
    outputs = _run(servable, signature, examples)
    classes, scores = outputs.get(CLASSES_KEY), outputs.get(SCORES_KEY)
    for name, tensor in ((CLASSES_KEY, classes), (SCORES_KEY, scores)):
        if tensor is not None and (tensor.ndim != 2 or tensor.shape[0] != len(examples)):
            raise InvalidArgument(
                f"Expected {name} Tensor shape: [batch_size num_classes] but got {list(tensor.shape)}"
            )
    num_classes = (classes if classes is not None else scores).shape[1]
    result = classification_pb2.ClassificationResult()
    for i in range(len(examples)):
        row = result.classifications.add()
        for c in range(num_classes):
            entry = row.classes.add()
            if classes is not None:
                label = classes[i, c]
                entry.label = label.decode("utf-8", "replace") if isinstance(label, bytes) else str(label)
            if scores is not None:
                entry.score = float(scores[i, c])
    return result


def regress(servable: Servable, signature_name: str, examples: list) -> regression_pb2.RegressionResult:
    """Run a regress signature; one float per example."""
    signature = _signature(servable, signature_name, REGRESS_METHOD, "regression")
    if OUTPUTS_KEY not in signature.outputs:
        raise InvalidArgument(f"No regression outputs found in SignatureDef: expected '{OUTPUTS_KEY}'")
    values = _run(servable, signature, examples)[OUTPUTS_KEY]
    if values.ndim == 2 and values.shape[1] == 1:
        values = values[:, 0]
    if values.ndim != 1 or values.shape[0] != len(examples):
        raise InvalidArgument(
            f"Expected output Tensor shape to be either [batch_size] or [batch_size, 1] "
            f"but got {list(values.shape)}"
        )
    result = regression_pb2.RegressionResult()
    for value in values.tolist():
        result.regressions.add(value=value)
    return result


def multi_inference(
    servable: Servable,
    request: inference_pb2.MultiInferenceRequest,
) -> inference_pb2.MultiInferenceResponse:
    """Run every task of a MultiInferenceRequest (one model; classify/regress signatures) on one input."""
    if not request.tasks:
        raise InvalidArgument("Found no tasks in the MultiInferenceRequest")
    examples = examples_from_input(request.input)
    seen: set[str] = set()
    response = inference_pb2.MultiInferenceResponse()
    for task in request.tasks:
        if task.model_spec.name != request.tasks[0].model_spec.name:
            raise InvalidArgument(
                "All ModelSpecs in a MultiInferenceRequest must access the same model name."
            )
        signature_name = task.model_spec.signature_name or DEFAULT_SIGNATURE
        if signature_name in seen:
            raise InvalidArgument(f"Duplicate evaluation of signature: {signature_name}")
        seen.add(signature_name)
        result = response.results.add()
        result.model_spec.name = servable.model_name
        result.model_spec.version.value = servable.version
        result.model_spec.signature_name = signature_name
        if task.method_name == CLASSIFY_METHOD:
            result.classification_result.CopyFrom(classify(servable, signature_name, examples))
        elif task.method_name == REGRESS_METHOD:
            result.regression_result.CopyFrom(regress(servable, signature_name, examples))
        else:
            raise InvalidArgument(f"Unsupported signature method_name: {task.method_name}")
    return response
